/**
 * Debian's Chromium driven by playwright-core (never a downloaded browser). `findChromium()` says
 * where it is, or why the browser tests skip; with CI set a missing browser is a failure instead.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import type { BrowserContext, ConsoleMessage, Page } from 'playwright-core';

const CANDIDATES = [process.env.EASEL_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter((p): p is string => !!p);

export function findChromium(): string | undefined {
  return CANDIDATES.find((p) => existsSync(p));
}

export const ARTIFACTS = join(import.meta.dirname, '..', '..', 'test-artifacts', 'console');

export interface Browser {
  context: BrowserContext;
  close(): Promise<void>;
}

export async function launch(executablePath: string): Promise<Browser> {
  const userDataDir = mkdtempSync(join(tmpdir(), 'easel-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true, // Playwright passes --headless itself
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'],
    viewport: { width: 1280, height: 860 },
    timeout: 30_000,
  });
  return {
    context,
    close: async () => {
      await context.close().catch(() => {});
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/**
 * Collects everything the page says is wrong: uncaught exceptions and console errors. A failed
 * request shows up as a console error too ("Failed to load resource: … status of 429"); those the
 * test provoked on purpose are declared with `expectHttpError` and only those are let through.
 */
export class ConsoleWatch {
  readonly errors: string[] = [];
  private readonly expected: { path: RegExp; status: number }[] = [];

  attach(page: Page): void {
    page.on('console', (m: ConsoleMessage) => {
      if (m.type() !== 'error') return;
      const text = m.text();
      const status = /Failed to load resource: the server responded with a status of (\d+)/.exec(text)?.[1];
      if (status) {
        const url = m.location().url;
        const path = url ? new URL(url).pathname : '';
        if (this.expected.some((e) => e.status === Number(status) && e.path.test(path))) return;
        this.errors.push(`${text} (${url})`);
        return;
      }
      this.errors.push(text);
    });
    page.on('pageerror', (err) => this.errors.push(`uncaught: ${err.message}`));
  }

  expectHttpError(path: RegExp, status: number): void {
    this.expected.push({ path, status });
  }
}

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}
