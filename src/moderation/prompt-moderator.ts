/**
 * Refuses prompts before any GPU time is spent: a configured blocklist (whole words) and patterns,
 * then optionally an OpenAI-compatible moderations endpoint. A refusal is a 400
 * `content_policy_violation`, as OpenAI answers.
 */
import { DomainError } from '../core/errors.ts';
import type { EaselConfig } from '../config/schema.ts';

export interface ModerationVerdict {
  flagged: boolean;
  /** What matched: a blocklisted word, a pattern, or the endpoint's categories. */
  reasons: string[];
}

const normalize = (text: string): string => text.normalize('NFKC').toLowerCase();
const escapeRegex = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

export class PromptModerator {
  private readonly words: { word: string; re: RegExp }[];
  private readonly patterns: { source: string; re: RegExp }[];
  private readonly endpoint: EaselConfig['moderation']['endpoint'];
  private readonly fetchImpl: typeof fetch;

  constructor(config: EaselConfig['moderation'], fetchImpl: typeof fetch = fetch) {
    // Whole words only: "ass" must not refuse "glass". \p{L}\p{N} make the boundary Unicode-aware.
    this.words = config.blocklist.map((word) => ({
      word,
      re: new RegExp(`(?<![\\p{L}\\p{N}])${escapeRegex(normalize(word))}(?![\\p{L}\\p{N}])`, 'u'),
    }));
    this.patterns = config.patterns.map((source, i) => {
      try {
        return { source, re: new RegExp(source, 'iu') };
      } catch (err) {
        throw new Error(`moderation.patterns.${i}: not a valid regular expression: ${(err as Error).message}`);
      }
    });
    this.endpoint = config.endpoint;
    this.fetchImpl = fetchImpl;
  }

  get enabled(): boolean {
    return this.words.length > 0 || this.patterns.length > 0 || !!this.endpoint;
  }

  /** The local rules only (no network). */
  checkLocal(text: string): ModerationVerdict {
    const norm = normalize(text);
    const reasons: string[] = [];
    for (const w of this.words) if (w.re.test(norm)) reasons.push(`blocked word "${w.word}"`);
    for (const p of this.patterns) if (p.re.test(text) || p.re.test(norm)) reasons.push(`blocked pattern /${p.source}/`);
    return { flagged: reasons.length > 0, reasons };
  }

  private async checkEndpoint(text: string): Promise<ModerationVerdict> {
    const ep = this.endpoint!;
    const key = ep.apiKey ?? (ep.apiKeyEnv ? process.env[ep.apiKeyEnv] : undefined);
    const url = `${ep.url.replace(/\/+$/, '')}/moderations`;
    const res = await this.fetchImpl(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      body: JSON.stringify({ model: ep.model, input: text }),
      signal: AbortSignal.timeout(ep.timeoutSeconds * 1000),
    });
    if (!res.ok) throw new Error(`moderation endpoint answered HTTP ${res.status}`);
    const body = (await res.json()) as { results?: { flagged?: boolean; categories?: Record<string, boolean> }[] };
    const results = body.results ?? [];
    const reasons = results.flatMap((r) => (r.flagged ? Object.entries(r.categories ?? {}).filter(([, v]) => v).map(([k]) => k) : []));
    const flagged = results.some((r) => r.flagged);
    return { flagged, reasons: flagged && reasons.length === 0 ? ['flagged by the moderation endpoint'] : reasons };
  }

  /** Throws the API's refusal when any rule or the endpoint flags the text. */
  async assertAllowed(text: string, param = 'prompt'): Promise<void> {
    if (!this.enabled) return;
    const local = this.checkLocal(text);
    if (local.flagged) throw refusal(param, local.reasons);
    if (!this.endpoint) return;
    let verdict: ModerationVerdict;
    try {
      verdict = await this.checkEndpoint(text);
    } catch (err) {
      if (!this.endpoint.failClosed) return;
      throw new DomainError('unavailable', `The prompt could not be checked by the moderation service (${(err as Error).message}); nothing was queued. Retry shortly.`, {
        code: 'moderation_unavailable',
      });
    }
    if (verdict.flagged) throw refusal(param, verdict.reasons);
  }
}

function refusal(param: string, reasons: string[]): DomainError {
  return new DomainError('policy', `Your request was rejected by this server's content policy (${reasons.join(', ')}).`, {
    param,
    code: 'content_policy_violation',
  });
}
