/**
 * Draft → refine: several cheap drafts in one request, then one of them refined by a premium model,
 * from the draft's image where the model takes an input image (img2img), else from its prompt; the
 * pair linked on both jobs.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createApiKey } from '../../src/auth/api-keys.ts';
import { startEasel, waitForJob } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';

describe('draft → refine', () => {
  let easel: TestEasel;
  let drafts: any;
  before(async () => {
    easel = await startEasel({ standin: { imageSize: 96 } });
  });
  after(() => easel.close());

  const post = async (path: string, json: Record<string, unknown>, key?: string) => {
    const res = await easel.api(path, { method: 'POST', key, json: { async: true, ...json } });
    return { status: res.status, body: (await res.json()) as any };
  };

  test('drafts: N cheap images in one request, on the preview tier', async () => {
    const { status, body } = await post('/v1/images/drafts', { prompt: 'a cozy reading nook, watercolor' });
    assert.equal(status, 202);
    drafts = await waitForJob(easel, body.id);
    assert.equal(drafts.status, 'succeeded');
    assert.equal(drafts.result.data.length, 4);
    assert.equal(drafts.model, 'dall-e-2');
    assert.equal(drafts.routing.alias, 'preview');
  });

  test('refining with a model that takes an input image starts from the draft (img2img)', async () => {
    const before = easel.standin.requests.length;
    const { status, body } = await post('/v1/images/refine', { job_id: drafts.id, index: 2, strength: 0.6 });
    assert.equal(status, 202, JSON.stringify(body));
    const refined = await waitForJob(easel, body.id);
    assert.equal(refined.status, 'succeeded');
    assert.equal(refined.kind, 'edit');
    assert.equal(refined.model, 'test-model', 'the premium tier');
    assert.deepEqual(refined.refined_from, { job_id: drafts.id, index: 2 });
    assert.equal(refined.request.prompt, 'a cozy reading nook, watercolor', 'the prompt carries over too');
    const sent = easel.standin.requests.slice(before).find((r) => r.path === '/v1/images/edits');
    assert.ok(sent, 'the refinement went to the edits endpoint');
    const draftImage = Buffer.from(await (await fetch(drafts.result.data[2].url)).arrayBuffer());
    assert.equal(sent.files.length, 1);
    assert.equal(sent.files[0]!.size, draftImage.length, 'the draft image is the input');
    const draft = await waitForJob(easel, drafts.id);
    assert.deepEqual(draft.refinements, [refined.id]);
  });

  test('a refining model without image input gets the prompt', async () => {
    const before = easel.standin.requests.length;
    const { status, body } = await post('/v1/images/refine', { job_id: drafts.id, index: 0, model: 'dall-e-3', prompt: 'a cozy reading nook, watercolor, golden hour' });
    assert.equal(status, 202, JSON.stringify(body));
    const refined = await waitForJob(easel, body.id);
    assert.equal(refined.kind, 'generation');
    assert.equal(refined.model, 'dall-e-3');
    assert.deepEqual(refined.refined_from, { job_id: drafts.id, index: 0 });
    const sent = easel.standin.requests.slice(before).find((r) => r.path === '/v1/images/generations');
    assert.equal(sent?.body?.prompt, 'a cozy reading nook, watercolor, golden hour');
    assert.equal((await waitForJob(easel, drafts.id)).refinements.length, 2);
  });

  test('refusals: a missing image, an unfinished draft, another key’s job', async () => {
    const bad = await post('/v1/images/refine', { job_id: drafts.id, index: 9 });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.param, 'index');
    assert.equal((await post('/v1/images/refine', { index: 0 })).body.error.param, 'job_id');
    assert.equal((await post('/v1/images/refine', { job_id: drafts.id, n: 2 })).body.error.param, 'n');
    const stranger = (await createApiKey(easel.runtime.keys, { name: 'stranger' })).secret;
    const other = await post('/v1/images/refine', { job_id: drafts.id }, stranger);
    assert.equal(other.status, 404);
    easel.standin.setLatency(800);
    try {
      const slow = await post('/v1/images/drafts', { prompt: 'slow drafts', n: 2 });
      const early = await post('/v1/images/refine', { job_id: slow.body.id });
      assert.equal(early.status, 409);
      assert.equal(early.body.error.code, 'draft_not_ready');
    } finally {
      easel.standin.setLatency(0);
    }
  });
});
