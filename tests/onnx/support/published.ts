/**
 * The catalog's default models (sd-turbo and taesd) as the Hugging Face stand-in publishes them:
 * tiny, working ONNX folders under the catalog's repository names, file for file. `padding` adds an
 * `unet/model.onnx_data` of that many random bytes (an optional catalog file, downloaded and then
 * dropped with the staging folder), so a download lasts long enough to watch, stall and resume.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { HfFile } from '../../support/hf-standin.ts';
import { buildTinyModel, buildTinyTaesd } from './tiny-models.ts';

export const TURBO_REPO = 'jdp8/sd-turbo-onnx';
export const TAESD_REPO = 'deinferno/taesd-onnx';
export const PADDING_PATH = 'unet/model.onnx_data';

function filesOf(src: string, repo: string, skip: (path: string) => boolean = () => false): HfFile[] {
  const out: HfFile[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (!skip(relative(src, p))) out.push({ repo, path: relative(src, p), data: readFileSync(p) });
    }
  };
  walk(src);
  return out;
}

export function publishedDefaultModels(root: string, opts: { padding?: number } = {}): HfFile[] {
  const turbo = buildTinyModel(join(root, 'published-turbo'), { unet: 'identity', vaeEncoder: true, scheduler: { _class_name: 'EulerDiscreteScheduler' } });
  const taesd = buildTinyTaesd(join(root, 'published-taesd'));
  const files = [...filesOf(turbo, TURBO_REPO), ...filesOf(taesd, TAESD_REPO, (p) => p === 'easel-model.json')];
  if (opts.padding) files.push({ repo: TURBO_REPO, path: PADDING_PATH, data: randomBytes(opts.padding) });
  return files;
}
