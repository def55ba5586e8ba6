/**
 * The web console end to end: Debian's Chromium (through playwright-core) against a real easel with
 * the OpenAI stand-in as its backend. Sign in, generate and watch the progress and the image arrive,
 * find it in the gallery, cancel a running job, see a budget refusal said plainly, create and revoke
 * a key (and the revoked key's tab is signed out), go offline and back. Any JavaScript error or
 * unexpected failed request in the page fails the test. Screenshots of every page, desktop and
 * 360 px wide, go to test-artifacts/console/.
 *
 * Skips without Chromium (`apt-get install chromium`); with CI set, a missing browser fails.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Page } from 'playwright-core';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { OpenAIBackend } from '../../src/backends/openai/openai-backend.ts';
import type { BackendCallContext, BackendRequest, BackendResult, ImageBackend } from '../../src/backends/image-backend.ts';
import type { BackendConfig } from '../../src/config/schema.ts';
import type { BackendFactory } from '../../src/backends/registry.ts';
import { ConsoleWatch, findChromium, launch, screenshot } from './browser.ts';
import type { Browser } from './browser.ts';

// Functions handed to page.evaluate/waitForFunction run in the browser; the tests' tsconfig has no DOM
// types, so they reach `document` through globalThis. (Strings would need 'unsafe-eval', which the
// console's Content-Security-Policy rightly refuses.)
const chromiumPath = findChromium();
const skip = !chromiumPath && !process.env.CI ? 'Chromium is not installed (apt-get install chromium); skipping the browser tests' : false;
const LATENCY_MS = 1200;
const BUDGET_KEY = 'tight-budget';

/**
 * The stand-in behind a wrapper that reports progress while the stand-in takes its time, and a
 * health answer shaped like a GPU pool's (one simulated host), so the System page has hosts to show.
 */
function consoleBackends(): Record<string, BackendFactory> {
  return {
    openai: (config: BackendConfig): ImageBackend => {
      const inner = new OpenAIBackend(config);
      let busyMs = 0;
      let running = 0;
      return {
        name: inner.name,
        type: inner.type,
        capabilities: inner.capabilities,
        modelSpec: (model: string) => inner.modelSpec(model),
        async health() {
          const h = await inner.health();
          return { ...h, message: h.ok ? '1/1 hosts up; 0 waiting' : h.message, details: { waiting: 0, hosts: [{ name: 'sim-gpu-0', url: 'http://127.0.0.1:1', status: h.ok ? 'up' : 'down', running, loaded: request0?.model ?? null, busyMs, calls: 0, images: 0 }] } };
        },
        async generate(request: BackendRequest, ctx: BackendCallContext): Promise<BackendResult> {
          request0 = request;
          const started = Date.now();
          running++;
          const timer = setInterval(() => ctx.reportProgress(Math.min(0.95, (Date.now() - started) / LATENCY_MS)), 50);
          try {
            return await inner.generate(request, ctx);
          } finally {
            clearInterval(timer);
            running--;
            busyMs += Date.now() - started;
          }
        },
      };
    },
  };
}
let request0: BackendRequest | undefined;

async function startWithBudgets(): Promise<{ easel: TestEasel; budgets: boolean }> {
  const common = { standin: { latencyMs: LATENCY_MS, imageSize: 512 }, runtime: { backendFactories: consoleBackends() } };
  try {
    // Real budgets where the cost-control config exists: the budget key can afford nothing.
    const easel = await startEasel({ ...common, overrides: { budgets: { keys: { [BUDGET_KEY]: { dailyUsd: 0.0001 } } } } });
    return { easel, budgets: true };
  } catch {
    return { easel: await startEasel(common), budgets: false };
  }
}

describe('web console in Chromium', { skip }, () => {
  let easel: TestEasel;
  let browser: Browser;
  let page: Page;
  let budgetsConfigured = false;
  const watch = new ConsoleWatch();

  before(async () => {
    assert.ok(chromiumPath, 'Chromium is required when CI is set: .ci/run installs it with apt-get');
    const built = spawnSync(process.execPath, [join(import.meta.dirname, '../../scripts/build-console.ts')], { encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    ({ easel, budgets: budgetsConfigured } = await startWithBudgets());
    browser = await launch(chromiumPath);
    await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: easel.url }).catch(() => {});
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    watch.attach(page);
    page.setDefaultTimeout(10_000);
  });

  after(async () => {
    await browser?.close();
    await easel?.close();
  });

  const nav = (label: string) => page.locator('nav[aria-label="Console"]').getByRole('link', { name: label, exact: true });

  test('sign in with the keyboard; a wrong key is refused plainly', async () => {
    await page.goto(`${easel.url}/`);
    await page.getByLabel('API key').waitFor();
    await screenshot(page, 'desktop-sign-in');
    watch.expectHttpError(/^\/v1\/keys\/current$/, 401);
    await page.keyboard.type('easel_sk_wrong');
    await page.keyboard.press('Enter');
    await page.getByRole('alert').filter({ hasText: 'does not know this key' }).waitFor();
    await page.getByLabel('API key').fill('');
    await page.getByLabel('API key').focus();
    await page.keyboard.type(easel.adminKey);
    await page.keyboard.press('Enter');
    await nav('Playground').waitFor();
    assert.equal(await nav('Keys').count(), 1, 'an admin key sees the Keys page');
    assert.ok(!page.url().includes(easel.adminKey), 'the key is never in the URL');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('easel.apiKey')), easel.adminKey);
    assert.equal(await page.evaluate(() => localStorage.length), 0);
  });

  test('generate: live progress from the event stream, then the image and its cost', async () => {
    await page.getByLabel('Prompt', { exact: true }).fill('a lighthouse at dawn, watercolor');
    await page.getByLabel('Seed').fill('42');
    await page.getByRole('button', { name: 'Generate' }).click();
    const run = page.locator('li.run').first();
    // Progress grows while the backend works (the event stream's progress events).
    await page.waitForFunction(() => Number((globalThis as any).document.querySelector('li.run [role="progressbar"]')?.getAttribute('aria-valuenow') ?? 0) > 0, null, { timeout: 8000 });
    await screenshot(page, 'desktop-playground-running');
    const img = run.locator('.images img').first();
    await img.waitFor();
    await page.waitForFunction(() => {
      const i = (globalThis as any).document.querySelector('li.run .images img');
      return !!i && i.complete && i.naturalWidth > 0;
    });
    assert.match((await run.locator('.badge').first().textContent()) ?? '', /succeeded/);
    assert.match((await run.locator('.cost').textContent()) ?? '', /cost/);
    assert.equal(await run.getByRole('link', { name: 'Download' }).count(), 1);
    assert.equal(await run.getByRole('button', { name: 'Same seed again' }).count(), 1, 'the seed is known, so it can be used again');
    assert.equal(await run.getByRole('button', { name: 'Variations' }).count(), 1, 'the stand-in backend does variations');
    await screenshot(page, 'desktop-playground');

    // Same seed again: a second run with the same parameters. With cost control's exact cache it is
    // answered from the first image at no cost (and says so); without, the backend runs it again.
    await run.getByRole('button', { name: 'Same seed again' }).click();
    await page.locator('li.run').nth(1).waitFor();
    await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('li.run .images img').length >= 2);
    const seeds = easel.standin.requests.filter((r) => r.body?.prompt === 'a lighthouse at dawn, watercolor').map((r) => r.body?.seed);
    const again = (await page.locator('li.run').first().locator('.cost').textContent()) ?? '';
    assert.ok(seeds.length === 2 ? seeds[1] === 42 : /answered from the cache/.test(again), `seeds sent: ${seeds.join(',')}; second run: ${again}`);
  });

  test('gallery: the image as a WebP thumbnail, filters, details and the request as code', async () => {
    await nav('Gallery').click();
    const thumbs = page.locator('.thumbs button.thumb');
    await thumbs.first().waitFor();
    assert.equal(await thumbs.count(), 2);
    // The first generation's image (the oldest, last) has the WebP thumbnail the worker stored.
    const original = thumbs.last();
    assert.match((await original.locator('img').getAttribute('src')) ?? '', /\/files\/thumbs\/\d{8}\/\d{4}\/job_[0-9A-Z]+-0\.webp\?/);
    await page.waitForFunction(() => [...(globalThis as any).document.querySelectorAll('.thumbs img')].every((i: any) => i.complete && i.naturalWidth > 0));
    await screenshot(page, 'desktop-gallery');

    // Filtering by prompt text: nothing matches, then the filter is cleared.
    await page.getByLabel('Prompt contains').fill('no such prompt');
    await page.getByText('No images match these filters.').waitFor();
    await page.getByRole('button', { name: 'Clear filters' }).click();
    await thumbs.first().waitFor();
    // The filtered list replaces the shown one once its answer arrives: wait for that answer, not for
    // the old thumbnails (focusing one the re-render then removes would send Enter nowhere).
    const filtered = page.waitForResponse((r) => r.url().includes('/v1/images?') && r.url().includes('model=test-model'));
    await page.getByLabel('Model').selectOption('test-model');
    await filtered;
    await page.waitForFunction(() => (globalThis as any).document.querySelectorAll('.thumbs button.thumb').length === 2);

    // Keyboard: the thumbnail is a button; Enter opens the details.
    await thumbs.last().focus();
    await page.keyboard.press('Enter');
    const dialog = page.getByRole('dialog', { name: 'Image details' });
    await dialog.waitFor();
    await dialog.getByText('a lighthouse at dawn, watercolor').first().waitFor();
    const text = (await dialog.textContent()) ?? '';
    assert.match(text, /standin/, 'backend');
    assert.match(text, /test-model/, 'model');
    assert.match(text, /job_[0-9A-Z]{26}/, 'job id');
    assert.match(text, /Seed\s*42/);
    assert.match(text, /Cost/);
    await dialog.getByRole('button', { name: 'Copy as curl' }).click();
    await dialog.getByRole('status').filter({ hasText: /curl command/ }).waitFor();
    const curl = (await dialog.locator('details pre').first().textContent()) ?? '';
    assert.match(curl, /^curl http:\/\/127\.0\.0\.1:\d+\/v1\/images\/generations/);
    assert.match(curl, /"seed":42/);
    assert.match(curl, /\$EASEL_API_KEY/);
    assert.ok(!curl.includes(easel.adminKey), 'the copied code never carries the key');
    const clip = await page.evaluate((): Promise<string> => (globalThis as any).navigator.clipboard.readText()).catch(() => undefined);
    if (clip !== undefined) assert.equal(clip, curl);
    await dialog.getByRole('button', { name: 'Copy as openai SDK' }).click();
    const sdk = (await dialog.locator('details pre').nth(1).textContent()) ?? '';
    assert.match(sdk, /client\.images\.generate\(/);
    assert.match(sdk, /baseURL: 'http:\/\/127\.0\.0\.1:\d+\/v1'/);
    await screenshot(page, 'desktop-gallery-detail');
    await page.keyboard.press('Escape');
    await dialog.waitFor({ state: 'hidden' });
  });

  test('jobs: cancel a running job, retry it, and the offline state', async () => {
    easel.standin.setLatency(8000);
    const res = await easel.api('/v1/images/generations', { method: 'POST', headers: { prefer: 'respond-async' }, json: { prompt: 'a slow one to cancel' } });
    const id = ((await res.json()) as any).id as string;
    await nav('Jobs').click();
    const row = page.locator(`#job-${id}`);
    await row.locator('.badge', { hasText: 'running' }).waitFor();
    await row.getByRole('progressbar').waitFor();
    await screenshot(page, 'desktop-jobs-running');
    await row.getByRole('button', { name: `Cancel job ${id}` }).click();
    await row.locator('.badge', { hasText: 'canceled' }).waitFor();
    assert.equal(((await (await easel.api(`/v1/images/jobs/${id}`)).json()) as any).status, 'canceled');

    easel.standin.setLatency(100);
    await row.getByRole('button', { name: `Retry job ${id}` }).click();
    const notice = page.getByRole('status').filter({ hasText: /Retried .* as a new job/ });
    await notice.waitFor();
    const newId = /job_[0-9A-Z]{26}/.exec((await notice.textContent()) ?? '')?.[0];
    assert.ok(newId);
    await page.locator(`#job-${newId} .badge`, { hasText: 'succeeded' }).waitFor();
    await screenshot(page, 'desktop-jobs');

    // Offline: the banner says so, and goes away when the server can be reached again.
    await browser.context.setOffline(true);
    await page.locator('.offline').waitFor();
    await browser.context.setOffline(false);
    await page.locator('.offline').waitFor({ state: 'detached', timeout: 10_000 });
  });

  test('costs and system pages', async () => {
    watch.expectHttpError(/^\/v1\/usage$/, 404); // until the cost report exists, the page falls back to job costs
    await nav('Costs').click();
    await page.getByRole('heading', { name: 'Spend per day' }).waitFor();
    assert.match((await page.locator('.stats').textContent()) ?? '', /images/);
    await screenshot(page, 'desktop-costs');

    await nav('System').click();
    const backend = page.locator('article.backend').first();
    await backend.waitFor();
    assert.match((await backend.textContent()) ?? '', /standin/);
    assert.match((await backend.locator('.badge').first().textContent()) ?? '', /healthy/);
    await backend.getByRole('table').getByText('sim-gpu-0').waitFor();
    await screenshot(page, 'desktop-system');
  });

  test('keys: create one, a budget refusal is shown plainly to its user, revoke it and its tab is signed out', async (t) => {
    await nav('Keys').click();
    await page.getByLabel('Name').fill(BUDGET_KEY);
    await page.getByRole('button', { name: 'Create key' }).click();
    const secret = ((await page.getByTestId('new-key-secret').textContent()) ?? '').trim();
    assert.match(secret, /^easel_sk_/);
    await page.locator(`tr[data-key-name="${BUDGET_KEY}"]`).waitFor();
    await screenshot(page, 'desktop-keys');

    // The new key signs in in another tab (its own session storage), without the Keys page.
    const tab = await browser.context.newPage();
    watch.attach(tab);
    await tab.goto(`${easel.url}/`);
    await tab.getByLabel('API key').fill(secret);
    await tab.getByRole('button', { name: 'Sign in' }).click();
    await tab.locator('nav[aria-label="Console"]').getByRole('link', { name: 'Playground' }).waitFor();
    assert.equal(await tab.locator('nav[aria-label="Console"]').getByRole('link', { name: 'Keys' }).count(), 0);

    // A budget refusal. With cost control configured, the key's real (tiny) daily budget refuses it;
    // otherwise the API's refusal (429 insufficient_quota, as budgets answer) is played by the browser.
    const probe = await easel.api('/v1/images/generations', { method: 'POST', key: secret, headers: { prefer: 'respond-async' }, json: { prompt: 'probe' } });
    const real = probe.status === 429 && ((await probe.json()) as any).error?.code === 'insufficient_quota';
    t.diagnostic(real ? 'budget refusal: real (cost-control budgets)' : `budget refusal: simulated in the browser (budgets configured: ${budgetsConfigured}, probe answered ${probe.status})`);
    watch.expectHttpError(/^\/v1\/images\/generations$/, 429);
    if (!real) {
      await tab.route('**/v1/images/generations', (route) =>
        route.fulfill({
          status: 429,
          contentType: 'application/json',
          headers: { 'x-should-retry': 'false', 'x-easel-budget-remaining-usd': '0.000100' },
          body: JSON.stringify({ error: { message: `Budget exceeded: this request would cost about $0.04, and key "${BUDGET_KEY}" has $0.0001 left of its daily budget ($0.0001).`, type: 'insufficient_quota', param: null, code: 'insufficient_quota' } }),
        }),
      );
    }
    await tab.getByLabel('Prompt', { exact: true }).fill('something expensive');
    await tab.getByRole('button', { name: 'Generate' }).click();
    const alert = tab.getByRole('alert').filter({ hasText: 'Budget exceeded' });
    await alert.waitFor();
    assert.match((await alert.textContent()) ?? '', /budget/i);
    await screenshot(tab, 'desktop-playground-budget-error');
    if (!real) await tab.unroute('**/v1/images/generations');

    // Revoke (with a confirmation step) from the admin tab.
    await page.bringToFront();
    const row = page.locator(`tr[data-key-name="${BUDGET_KEY}"]`);
    await row.getByRole('button', { name: `Revoke key ${BUDGET_KEY}` }).click();
    await row.getByRole('button', { name: 'Confirm revoke' }).click();
    await row.getByText(/^revoked/).waitFor();

    // The revoked key's next call is refused and its tab goes back to sign-in, saying why.
    watch.expectHttpError(/^\/v1\//, 401);
    await tab.bringToFront();
    await tab.locator('nav[aria-label="Console"]').getByRole('link', { name: 'Jobs' }).click();
    await tab.getByText(/Signed out/).waitFor();
    await tab.getByLabel('API key').waitFor();
    assert.equal(await tab.evaluate(() => sessionStorage.getItem('easel.apiKey')), null);
    await tab.close();
  });

  test('360 px wide: every page fits without sideways scrolling', async () => {
    await page.setViewportSize({ width: 360, height: 760 });
    for (const [path, name, ready] of [
      ['/', 'playground', 'li.run, p.empty'],
      ['/gallery', 'gallery', '.thumbs button.thumb'],
      ['/jobs', 'jobs', 'table.jobs'],
      ['/costs', 'costs', '.stats'],
      ['/system', 'system', 'article.backend'],
      ['/keys', 'keys', 'table.keys-table'],
    ] as const) {
      await page.goto(`${easel.url}${path}`);
      await page.locator(ready).first().waitFor();
      const width = await page.evaluate((): number => (globalThis as any).document.documentElement.scrollWidth);
      assert.ok(width <= 360, `${path} is ${width}px wide at 360px`);
      await screenshot(page, `mobile-${name}`);
    }
    await page.goto(`${easel.url}/gallery`);
    await page.locator('.thumbs button.thumb').first().click();
    await page.getByRole('dialog').waitFor();
    await screenshot(page, 'mobile-gallery-detail');
    await page.keyboard.press('Escape');
    await page.evaluate(() => sessionStorage.clear());
    await page.goto(`${easel.url}/`);
    await page.getByLabel('API key').waitFor();
    await screenshot(page, 'mobile-sign-in');
  });

  test('no JavaScript errors and no unexpected failed requests in the page', () => {
    assert.deepEqual(watch.errors, []);
  });
});
