/**
 * Admission's LoRA step: the adapters a request names must be ones its model offers now. The check
 * itself is pure (`loraProblem` in model-spec.ts); what this adds is the second look on a miss: a
 * backend that discovers its LoRAs (ComfyUI, A1111, sd-server) lists them again (throttled) and the
 * model's spec is asked afresh, so an adapter copied onto the hosts a moment ago is found without
 * waiting for the next scheduled refresh.
 */
import { loraProblem } from '../backends/model-spec.ts';
import type { SpecProblem } from '../backends/model-spec.ts';
import type { BackendRegistry, ResolvedModel } from '../backends/registry.ts';
import type { ImageRequest } from '../core/image-request.ts';

export async function lorasProblem(route: ResolvedModel, request: Pick<ImageRequest, 'loras'>, registry: BackendRegistry): Promise<SpecProblem | undefined> {
  const problem = loraProblem(route.name, route.spec, request.loras);
  if (problem?.code !== 'unknown_lora' || !route.backend.refreshLoras) return problem;
  await route.backend.refreshLoras().catch(() => {});
  const fresh = registry.resolve(route.name);
  return fresh ? loraProblem(fresh.name, fresh.spec, request.loras) : problem;
}
