/**
 * The console on a first start with nothing configured, in Chromium: while the default model
 * downloads (from the Hugging Face stand-in, held part-way), the Playground shows a banner with the
 * download's progress and the System page its details; once the model is in, the Playground offers
 * it and generates with it, without a reload or a restart.
 *
 * Skips without Chromium (`apt-get install chromium`); with CI set, a missing browser fails.
 */
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Page } from 'playwright-core';
import { startEasel } from '../support/easel.ts';
import type { TestEasel } from '../support/easel.ts';
import { startHfStandin } from '../support/hf-standin.ts';
import type { HfStandin } from '../support/hf-standin.ts';
import { PADDING_PATH, TURBO_REPO, publishedDefaultModels } from '../onnx/support/published.ts';
import { ConsoleWatch, findChromium, launch, screenshot } from './browser.ts';
import type { Browser } from './browser.ts';

const chromiumPath = findChromium();
const skip = !chromiumPath && !process.env.CI ? 'Chromium is not installed (apt-get install chromium); skipping the browser tests' : false;

describe('console during the first start download', { skip }, () => {
  let root: string;
  let hf: HfStandin;
  let easel: TestEasel;
  let browser: Browser;
  let page: Page;
  const watch = new ConsoleWatch();

  before(async () => {
    assert.ok(chromiumPath, 'Chromium is required when CI is set: .ci/run installs it with apt-get');
    const built = spawnSync(process.execPath, [join(import.meta.dirname, '../../scripts/build-console.ts')], { encoding: 'utf8' });
    assert.equal(built.status, 0, built.stderr);
    root = mkdtempSync(join(tmpdir(), 'easel-console-pull-'));
    hf = await startHfStandin(publishedDefaultModels(root, { padding: 400_000 }));
    // Held at 100 KB of the big file until the test lets it go.
    hf.stallNext(TURBO_REPO, PADDING_PATH, 100_000);
    easel = await startEasel({ overrides: { backends: [], models: [], modelStore: { endpoint: hf.url, idleTimeoutSeconds: 120 } } });
    browser = await launch(chromiumPath!);
    page = browser.context.pages()[0] ?? (await browser.context.newPage());
    watch.attach(page);
    page.setDefaultTimeout(15_000);
  });

  after(async () => {
    await browser?.close();
    await easel?.close();
    await hf?.close();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  test('a banner with the progress while it downloads, then the model is offered and generates', async () => {
    await page.goto(`${easel.url}/`);
    await page.getByLabel('API key').fill(easel.adminKey);
    await page.keyboard.press('Enter');
    const banner = page.locator('.playground .model-download');
    await banner.waitFor();
    assert.match((await banner.textContent()) ?? '', /Downloading the default model \(taesd \+ sd-turbo\) — generations start as soon as it is ready/);
    // The bar moves off zero once the held file has sent its first bytes.
    await page.waitForFunction(() => Number((globalThis as any).document.querySelector('.model-download [role="progressbar"]')?.getAttribute('aria-valuenow') ?? 0) > 0);
    assert.match((await banner.textContent()) ?? "", /[\d.]+ [KM]i?B of [\d.]+ [KM]i?B/);
    assert.equal(await page.getByRole('button', { name: 'Generate' }).isDisabled(), true, 'nothing to generate with yet');
    await screenshot(page, 'desktop-playground-model-download');

    await page.locator('nav[aria-label="Console"]').getByRole('link', { name: 'System', exact: true }).click();
    const card = page.locator('.system .model-download');
    await card.waitFor();
    assert.match((await card.textContent()) ?? '', new RegExp(`from ${hf.url.replace(/[.:/]/g, '\\$&')}`));
    await screenshot(page, 'desktop-system-model-download');

    // Let the download go on: the held connection drops, the downloader resumes and finishes.
    await page.locator('nav[aria-label="Console"]').getByRole('link', { name: 'Playground', exact: true }).click();
    await banner.waitFor();
    hf.releaseStalls();
    await page.locator('#model option', { hasText: 'sd-turbo (default)' }).waitFor({ state: 'attached', timeout: 30_000 });
    await banner.waitFor({ state: 'detached' });
    await page.getByLabel('Prompt', { exact: true }).fill('a lighthouse at dawn');
    await page.getByRole('button', { name: 'Generate' }).click();
    await page.waitForFunction(() => {
      const i = (globalThis as any).document.querySelector('li.run .images img');
      return !!i && i.complete && i.naturalWidth > 0;
    }, null, { timeout: 30_000 });
    assert.match((await page.locator('li.run .badge').first().textContent()) ?? '', /succeeded/);
    assert.deepEqual(watch.errors, []);
  });
});
