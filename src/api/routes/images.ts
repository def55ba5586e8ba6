/** POST /v1/images/generations: parse, submit, answer (sync, async, or an event stream). */
import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { readGeneration, schemaFor } from '../generation-request.ts';
import { documentedOnly, noQuery } from '../schemas/compile.ts';
import { submissionHeaders } from '../schemas/common.ts';
import { submissionResponses } from '../schemas/job.ts';
import type { ParsedGeneration } from '../generation-request.ts';
import { idempotencyKeyOf } from '../idempotency.ts';
import { parseCachePolicy } from '../cache-header.ts';
import { prefersAsync, submitAndAnswer } from '../submit-answer.ts';
import type { AnswerDeps } from '../submit-answer.ts';
import type { FastifyRequest } from 'fastify';
import type { Entry, SubmitCommand } from '../../submissions/command.ts';
import type { JobKind } from '../../core/job.ts';

/** The command for a parsed generations-shaped body (generations, drafts, refine, edits' text fields). */
export function commandOf(req: FastifyRequest, entry: Entry, kind: JobKind, parsed: ParsedGeneration): SubmitCommand {
  return {
    entry,
    kind,
    model: parsed.model,
    request: parsed.request,
    priority: parsed.priority,
    webhookUrl: parsed.webhookUrl,
    metadata: parsed.metadata,
    cachePolicy: parseCachePolicy(req.headers['easel-cache']),
    idempotencyKey: idempotencyKeyOf(req),
  };
}

export async function imageRoutes(app: FastifyInstance, deps: AnswerDeps) {
  const limits = deps.config.limits;
  app.withTypeProvider<ZodTypeProvider>().post('/images/generations', {
    config: { limitGroup: 'generations' },
    schema: {
      summary: 'Create images from a prompt (OpenAI-compatible)',
      operationId: 'createImage',
      tags: ['images'],
      // The route schema is the one validation of the body; readGeneration checks what spans fields.
      body: schemaFor(limits),
      querystring: noQuery,
      headers: documentedOnly(submissionHeaders),
      response: submissionResponses,
    },
  }, async (req, reply) => {
    const parsed = readGeneration(req.body, limits, prefersAsync(req));
    return submitAndAnswer(deps, req, reply, commandOf(req, 'generations', 'generation', parsed), parsed);
  });
}
