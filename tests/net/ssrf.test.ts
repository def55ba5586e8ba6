import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UnsafeUrlError, checkUrl, classifyAddress, guardedLookup, isPublicAddress, parseIPv6 } from '../../src/net/ssrf.ts';
import type { Resolver, ResolvedAddress } from '../../src/net/ssrf.ts';
import { OutboundPolicy } from '../../src/net/outbound-policy.ts';

/** A resolver answering from a table (no real DNS in tests). */
function fakeResolver(table: Record<string, string[]>): Resolver {
  return async (host) => {
    const addrs = table[host];
    if (!addrs) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
    return addrs.map((address): ResolvedAddress => ({ address, family: address.includes(':') ? 6 : 4 }));
  };
}

describe('classifyAddress', () => {
  const cases: [string, string][] = [
    // IPv4
    ['8.8.8.8', 'public'],
    ['1.1.1.1', 'public'],
    ['93.184.216.34', 'public'],
    ['0.0.0.0', 'unspecified'],
    ['0.1.2.3', 'unspecified'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.0.0.1', 'private'],
    ['10.255.255.255', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['172.15.255.255', 'public'],
    ['172.32.0.0', 'public'],
    ['192.168.1.1', 'private'],
    ['192.169.0.1', 'public'],
    ['169.254.169.254', 'link-local'],
    ['169.254.0.1', 'link-local'],
    ['100.64.0.1', 'shared'],
    ['100.127.255.255', 'shared'],
    ['100.128.0.0', 'public'],
    ['100.63.255.255', 'public'],
    ['192.0.0.8', 'reserved'],
    ['192.0.2.10', 'documentation'],
    ['198.51.100.7', 'documentation'],
    ['203.0.113.9', 'documentation'],
    ['198.18.0.1', 'benchmarking'],
    ['198.19.255.255', 'benchmarking'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['240.0.0.1', 'reserved'],
    ['255.255.255.255', 'broadcast'],
    // IPv6
    ['::', 'unspecified'],
    ['::1', 'loopback'],
    ['[::1]', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:10.1.2.3', 'private'],
    ['::ffff:169.254.169.254', 'link-local'],
    ['::ffff:8.8.8.8', 'public'],
    ['::ffff:0:10.0.0.1', 'private'],
    ['::127.0.0.1', 'reserved'],
    ['64:ff9b::10.0.0.1', 'private'],
    ['64:ff9b::8.8.8.8', 'public'],
    ['64:ff9b:1::1', 'private'],
    ['2002:0a00:0001::1', 'private'],
    ['2002:0808:0808::1', 'public'],
    ['fc00::1', 'private'],
    ['fd12:3456:789a::1', 'private'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['febf::1', 'link-local'],
    ['fec0::1', 'private'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'documentation'],
    ['3fff::1', 'documentation'],
    ['2001::1', 'reserved'],
    ['2001:2::1', 'benchmarking'],
    ['100::1', 'reserved'],
    ['2606:4700:4700::1111', 'public'],
    ['2a00:1450:4001:82a::200e', 'public'],
    // Not addresses
    ['localhost', 'invalid'],
    ['1.2.3', 'invalid'],
    ['256.1.1.1', 'invalid'],
    ['1::2::3', 'invalid'],
    ['12345::', 'invalid'],
    ['', 'invalid'],
  ];
  for (const [address, kind] of cases) {
    test(`${address || '(empty)'} is ${kind}`, () => {
      assert.equal(classifyAddress(address), kind);
      assert.equal(isPublicAddress(address), kind === 'public');
    });
  }

  test('IPv6 parsing expands :: and embedded IPv4', () => {
    assert.deepEqual(parseIPv6('1::2'), [1, 0, 0, 0, 0, 0, 0, 2]);
    assert.deepEqual(parseIPv6('::ffff:1.2.3.4'), [0, 0, 0, 0, 0, 0xffff, 0x0102, 0x0304]);
    assert.deepEqual(parseIPv6('1:2:3:4:5:6:7:8'), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(parseIPv6('1:2:3:4:5:6:7:8:9'), undefined);
    assert.equal(parseIPv6('1:2:3:4:5:6:7::8'), undefined);
  });
});

describe('checkUrl', () => {
  const resolver = fakeResolver({
    'hooks.example.com': ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946'],
    'internal.example.com': ['10.1.2.3'],
    'mixed.example.com': ['93.184.216.34', '192.168.0.10'],
    'metadata.example.com': ['169.254.169.254'],
    'v6.example.com': ['::1'],
  });

  const refused = async (url: string, pattern: RegExp, reason = 'address') => {
    await assert.rejects(checkUrl(url, { resolver }), (err: unknown) => {
      assert.ok(err instanceof UnsafeUrlError, String(err));
      assert.equal(err.reason, reason);
      assert.match(err.message, pattern);
      return true;
    });
  };

  test('public hosts pass', async () => {
    const url = await checkUrl('https://hooks.example.com/x', { resolver });
    assert.equal(url.hostname, 'hooks.example.com');
    await checkUrl('http://8.8.8.8:8080/hook', { resolver });
    await checkUrl('http://[2606:4700:4700::1111]/hook', { resolver });
  });

  test('IP literals that are not public are refused without resolving', async () => {
    await refused('http://127.0.0.1:8080/', /127\.0\.0\.1 is a loopback address/);
    await refused('http://10.0.0.1/', /10\.0\.0\.1 is a private address/);
    await refused('http://169.254.169.254/latest/meta-data', /metadata endpoint/);
    await refused('http://[::1]/', /::1 is a loopback address/);
    await refused('http://[::ffff:127.0.0.1]/', /loopback/);
    await refused('http://0.0.0.0/', /unspecified/);
    await refused('http://100.64.1.1/', /carrier-grade NAT/);
    await refused('http://[fe80::1]/', /link-local/);
    await refused('http://[fd00::1]/', /private/);
    // WHATWG URL parsing normalises odd IPv4 spellings before the check sees them.
    await refused('http://2130706433/', /127\.0\.0\.1 is a loopback/);
    await refused('http://0x7f.1/', /127\.0\.0\.1 is a loopback/);
    await refused('http://017700000001/', /loopback/);
  });

  test('host names resolving to a non-public address are refused (any address counts)', async () => {
    await refused('https://internal.example.com/hook', /internal\.example\.com resolves to 10\.1\.2\.3, a private address/);
    await refused('https://mixed.example.com/hook', /192\.168\.0\.10/);
    await refused('https://metadata.example.com/', /metadata endpoint/);
    await refused('https://v6.example.com/', /loopback/);
  });

  test('localhost (system resolver) is refused', async () => {
    await assert.rejects(checkUrl('http://localhost:9/hook'), (err: unknown) => err instanceof UnsafeUrlError && /localhost resolves to/.test(err.message));
  });

  test('unresolvable hosts, other schemes and non-URLs are refused', async () => {
    await refused('https://nowhere.example.com/', /could not be resolved \(ENOTFOUND\)/, 'unresolvable');
    await refused('ftp://hooks.example.com/', /scheme "ftp"/, 'protocol');
    await refused('file:///etc/passwd', /scheme "file"/, 'protocol');
    await refused('not a url', /absolute URL/, 'invalid_url');
  });

  test('a slow resolver times out', async () => {
    const slow: Resolver = () => new Promise(() => {});
    await assert.rejects(checkUrl('https://slow.example.com/', { resolver: slow, resolveTimeoutMs: 50 }), /did not resolve within 50 ms/);
  });

  test('the outbound policy lets listed private networks and hosts through, and nothing else', async () => {
    const policy = new OutboundPolicy({ allowHosts: ['hooks.internal.example', '*.svc.cluster.local'], allowNetworks: ['127.0.0.0/8', 'fd00:1::/64'] });
    const resolver = fakeResolver({ 'hooks.internal.example': ['10.1.2.3'], 'a.b.svc.cluster.local': ['10.9.9.9'], 'other.internal.example': ['10.1.2.4'] });
    await checkUrl('http://127.0.0.1:1/', { policy, resolver });
    await checkUrl('http://[fd00:1::5]/', { policy, resolver });
    await checkUrl('https://hooks.internal.example/x', { policy, resolver });
    await checkUrl('https://a.b.svc.cluster.local/x', { policy, resolver });
    await assert.rejects(checkUrl('https://other.internal.example/x', { policy, resolver }), /private address/);
    await assert.rejects(checkUrl('http://[fd00:2::5]/', { policy, resolver }), /private address/);
    await assert.rejects(checkUrl('http://192.168.1.1/', { policy, resolver }), /private address/);
    await assert.rejects(checkUrl('gopher://127.0.0.1/', { policy }), UnsafeUrlError);
  });

  test('cloud metadata endpoints are refused whatever the policy allows', async () => {
    const policy = new OutboundPolicy({ allowHosts: ['metadata.google.internal', 'meta.example'], allowNetworks: ['0.0.0.0/0', '::/0', '169.254.0.0/16', '100.64.0.0/10'] });
    const resolver = fakeResolver({ 'meta.example': ['169.254.169.254'], 'metadata.google.internal': ['169.254.169.254'] });
    for (const url of ['http://169.254.169.254/latest/meta-data/', 'http://[fd00:ec2::254]/', 'http://100.100.100.200/', 'http://metadata.google.internal/computeMetadata/v1/', 'http://meta.example/', 'http://[::ffff:169.254.169.254]/', 'http://169.254.170.2/v2/credentials']) {
      await assert.rejects(checkUrl(url, { policy, resolver }), /metadata endpoint/, url);
    }
    await assert.rejects(checkUrl('http://169.254.169.254/'), /metadata endpoint/, 'without a policy too');
  });

  test('networks in the policy are parsed strictly', () => {
    assert.throws(() => new OutboundPolicy({ allowHosts: [], allowNetworks: ['10.0.0.0/33'] }), /prefix length/);
    assert.throws(() => new OutboundPolicy({ allowHosts: [], allowNetworks: ['not-a-network'] }), /not an IPv4 or IPv6 network/);
  });
});

describe('guardedLookup (connect time)', () => {
  const lookupP = (fn: ReturnType<typeof guardedLookup>, host: string, options: Record<string, unknown>) =>
    new Promise<{ address: unknown; family?: number }>((resolve, reject) =>
      fn(host, options as any, (err, address, family) => (err ? reject(err) : resolve({ address, family }))),
    );

  test('answers both callback shapes for public addresses', async () => {
    const fn = guardedLookup({ resolver: fakeResolver({ 'ok.example.com': ['93.184.216.34', '2606:2800:220:1::1'] }) });
    assert.deepEqual(await lookupP(fn, 'ok.example.com', {}), { address: '93.184.216.34', family: 4 });
    assert.deepEqual(await lookupP(fn, 'ok.example.com', { all: true }), {
      address: [
        { address: '93.184.216.34', family: 4 },
        { address: '2606:2800:220:1::1', family: 6 },
      ],
      family: undefined,
    });
    assert.deepEqual(await lookupP(fn, 'ok.example.com', { family: 6 }), { address: '2606:2800:220:1::1', family: 6 });
  });

  test('a name whose answer changed to a private address after the early check is refused (DNS rebinding)', async () => {
    let answer = '93.184.216.34';
    const resolver: Resolver = async () => [{ address: answer, family: 4 }];
    await checkUrl('http://rebind.example.com/hook', { resolver }); // passes at submission
    answer = '10.0.0.5'; // …then the name points inside
    const fn = guardedLookup({ resolver });
    await assert.rejects(lookupP(fn, 'rebind.example.com', { all: true }), (err: unknown) => {
      assert.ok(err instanceof UnsafeUrlError);
      assert.match(err.message, /rebind\.example\.com resolves to 10\.0\.0\.5, a private address/);
      return true;
    });
  });

  test('refuses inside a real node:http request before any connection is made', async () => {
    let hits = 0;
    const server = createServer((_req, res) => {
      hits++;
      res.end('ok');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const port = (server.address() as AddressInfo).port;
    try {
      const get = (lookup: ReturnType<typeof guardedLookup>) =>
        new Promise<number>((resolve, reject) => {
          const req = request({ host: 'receiver.test', port, path: '/', agent: false, lookup }, (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          });
          req.on('error', reject);
          req.end();
        });
      const resolver = fakeResolver({ 'receiver.test': ['127.0.0.1'] });
      await assert.rejects(get(guardedLookup({ resolver })), (err: unknown) => err instanceof UnsafeUrlError && /loopback/.test(err.message));
      assert.equal(hits, 0);
      // The same request with private addresses allowed goes through.
      assert.equal(await get(guardedLookup({ resolver, policy: new OutboundPolicy({ allowHosts: ['receiver.test'], allowNetworks: [] }) })), 200);
      assert.equal(hits, 1);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
