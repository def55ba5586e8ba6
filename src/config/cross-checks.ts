import type { RoutingConfig } from '../routing/config.ts';
import type { CostModelConfig } from '../pricing/cost-model-config.ts';

interface RefineCtx {
  addIssue(issue: { code: 'custom'; path: (string | number)[]; message: string }): void;
}

/**
 * Cross-checks of the cost-control sections against `backends` and `models` (called from the
 * config schema's superRefine), so `easel config check` names a typo'd model or backend.
 * With no models configured (the embedded default serves what was pulled) names are not checked.
 */
export function checkCostConfig(
  cfg: { backends: { name: string }[]; models: { name: string; fallback?: string[] }[]; routing: RoutingConfig; costModel: CostModelConfig },
  ctx: RefineCtx,
): void {
  const backends = new Set(cfg.backends.map((b) => b.name));
  const models = new Set(cfg.models.map((m) => m.name));
  if (cfg.models.length > 0) {
    for (const [name, alias] of Object.entries(cfg.routing.aliases)) {
      alias?.models?.forEach((m, i) => {
        if (!models.has(m)) ctx.addIssue({ code: 'custom', path: ['routing', 'aliases', name, 'models', i], message: `no model named "${m}"` });
      });
    }
    for (const [from, chain] of Object.entries(cfg.routing.fallback)) {
      if (!models.has(from)) ctx.addIssue({ code: 'custom', path: ['routing', 'fallback', from], message: `no model named "${from}"` });
      chain.forEach((m, i) => {
        if (!models.has(m)) ctx.addIssue({ code: 'custom', path: ['routing', 'fallback', from, i], message: `no model named "${m}"` });
      });
    }
    cfg.models.forEach((model, mi) =>
      model.fallback?.forEach((m, i) => {
        if (!models.has(m)) ctx.addIssue({ code: 'custom', path: ['models', mi, 'fallback', i], message: `no model named "${m}"` });
      }),
    );
  }
  if (cfg.backends.length > 0) {
    for (const name of Object.keys(cfg.costModel.backends)) {
      if (!backends.has(name)) ctx.addIssue({ code: 'custom', path: ['costModel', 'backends', name], message: `no backend named "${name}"` });
    }
  }
}
