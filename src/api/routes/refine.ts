/**
 * Draft → refine.
 *
 *   POST /v1/images/drafts   a generations body; `n` defaults to 4 and `model` to the `preview` tier:
 *                            several cheap drafts in one job.
 *   POST /v1/images/refine   `{"job_id", "index", "model", "prompt", "strength", …}`: refines draft
 *                            `index` of job `job_id` with a premium model (default the `premium` tier).
 *
 * Where the refining model can take an input image (img2img: an edit-capable backend), the draft is
 * its starting point, so the composition survives (`strength`, for backends that take one, is passed
 * as a provider option); otherwise the prompt carries over. Either way the refinement records the
 * draft it came from (`refined_from` on the job) and the draft lists its `refinements`.
 */
import type { FastifyInstance } from 'fastify';
import { DomainError, invalidParam, notFound } from '../../core/errors.ts';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { parseGeneration, schemaFor } from '../generation-request.ts';
import { submissionHeaders } from '../schemas/common.ts';
import { documentedOnly, noQuery } from '../schemas/compile.ts';
import { submissionResponses } from '../schemas/job.ts';
import { prefersAsync, submitAndAnswer } from '../submit-answer.ts';
import type { AnswerDeps } from '../submit-answer.ts';
import { commandOf } from './images.ts';

function objectBody(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new DomainError('invalid', 'The request body must be a JSON object.', { code: 'invalid_request' });
  return { ...(body as Record<string, unknown>) };
}

export async function refineRoutes(app: FastifyInstance, deps: AnswerDeps) {
  const r = app.withTypeProvider<ZodTypeProvider>();
  const generation = schemaFor(deps.config.limits);
  const common = { querystring: noQuery, headers: documentedOnly(submissionHeaders), response: submissionResponses };
  r.post('/images/drafts', {
    config: { limitGroup: 'generations' },
    schema: {
      summary: 'Several cheap drafts in one job (`n` defaults to 4, `model` to the `preview` tier)',
      operationId: 'createDrafts',
      tags: ['images'],
      // Validated once, by parseGeneration, after the drafts' defaults are applied.
      body: documentedOnly(generation.extend({ n: generation.shape.n.describe('How many drafts (default 4)'), model: generation.shape.model.describe('Default: the `preview` tier') })),
      ...common,
    },
  }, async (req, reply) => {
    const b = objectBody(req.body);
    const parsed = parseGeneration({ ...b, n: b.n ?? 4, model: b.model ?? 'preview' }, deps.config.limits, prefersAsync(req));
    return submitAndAnswer(deps, req, reply, commandOf(req, 'drafts', 'generation', parsed), parsed);
  });

  r.post('/images/refine', {
    config: { limitGroup: 'generations' },
    schema: {
      summary: 'Refine one draft with a premium model (img2img where the model can take an input image)',
      operationId: 'refineDraft',
      tags: ['images'],
      // Validated once, by the handler and parseGeneration (the prompt and model default from the draft).
      body: documentedOnly(
        generation.extend({
          job_id: z.string().describe('The draft job'),
          index: z.int().min(0).optional().describe('Which image of the draft (default 0)'),
          strength: z.number().gt(0).max(1).optional().describe('How far the refinement may move from the draft, for backends that take it'),
          prompt: generation.shape.prompt.optional().describe("Default: the draft's prompt"),
          model: generation.shape.model.describe('Default: the `premium` tier'),
          n: z.literal(1).optional().describe('A refinement makes one image'),
        }),
      ),
      ...common,
    },
  }, async (req, reply) => {
    const b = objectBody(req.body);
    const draftId = b.job_id;
    const index = b.index ?? 0;
    const strength = b.strength;
    delete b.job_id;
    delete b.index;
    delete b.strength;
    if (typeof draftId !== 'string' || !draftId) throw invalidParam('job_id', "Missing required parameter: 'job_id' (the draft job).", 'missing_required_parameter');
    if (typeof index !== 'number' || !Number.isInteger(index) || index < 0) throw invalidParam('index', "Invalid value for 'index': expected the 0-based index of the draft image.");
    if (strength !== undefined && (typeof strength !== 'number' || !(strength > 0 && strength <= 1))) throw invalidParam('strength', "Invalid value for 'strength': expected a number in (0, 1].");
    if (b.n !== undefined && b.n !== 1) throw invalidParam('n', "Invalid value for 'n': a refinement makes one image.");

    const draft = await deps.store.getJob(draftId);
    if (!draft || draft.keyId !== req.apiKey.id) throw notFound('job', draftId, 'job_id');
    if (draft.status !== 'succeeded') throw new DomainError('conflict', `Job ${draftId} has not succeeded (it is ${draft.status}); only finished drafts can be refined.`, { param: 'job_id', code: 'draft_not_ready' });
    const images = await deps.store.listImagesForJob(draft.id);
    const image = images.find((i) => i.index === index);
    if (!image) throw invalidParam('index', `Job ${draftId} has ${images.length} image(s); there is no index ${index}.`);

    const parsed = parseGeneration({ ...b, prompt: b.prompt ?? draft.request.prompt, model: b.model ?? 'premium', n: 1 }, deps.config.limits, prefersAsync(req));
    if (parsed.request.negativePrompt === undefined && draft.request.negativePrompt) parsed.request.negativePrompt = draft.request.negativePrompt;
    // img2img from the draft where the refining model takes an input image (the submission decides).
    return submitAndAnswer(
      deps,
      req,
      reply,
      { ...commandOf(req, 'refine', 'generation', parsed), inputs: { kind: 'stored', images: [image.storageKey] }, refine: { parent: { jobId: draft.id, index }, ...(strength !== undefined ? { strength } : {}) } },
      parsed,
    );
  });
}
