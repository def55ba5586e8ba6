/**
 * SSRF guard for URLs easel calls on a user's behalf (webhooks now, remote image URLs later). What
 * may be called beyond public addresses is the operator's OutboundPolicy (src/net/outbound-policy.ts).
 *
 * Three pieces:
 * - `classifyAddress` says what kind of address an IPv4/IPv6 literal is (loopback, private, link-local,
 *   CGNAT, multicast, …); only `public` ones may be called unless private addresses are allowed.
 *   Embedded IPv4 (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged by
 *   the IPv4 address it carries.
 * - `checkUrl` is the early check (at submission): http(s) only, and every address the host resolves
 *   to must be public.
 * - `guardedLookup` is the check that matters: a `lookup` for node:net/http/https that refuses at
 *   connect time, on the very answer the socket connects to, so a DNS answer that changes between the
 *   early check and the request (DNS rebinding) is still refused. IP-literal hosts never reach a
 *   `lookup`, so callers check those with `assertPublicHost` first.
 */
import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import type { LookupFunction } from 'node:net';
import { OutboundPolicy } from './outbound-policy.ts';
import { parseIPv4, parseIPv6 } from './ip.ts';

export type AddressKind =
  | 'public'
  | 'unspecified'
  | 'loopback'
  | 'private'
  | 'link-local'
  | 'shared'
  | 'multicast'
  | 'broadcast'
  | 'documentation'
  | 'benchmarking'
  | 'reserved'
  | 'invalid';

const KIND_WORDS: Record<AddressKind, string> = {
  public: 'a public address',
  unspecified: 'an unspecified ("this host") address',
  loopback: 'a loopback address',
  private: 'a private address',
  'link-local': 'a link-local address',
  shared: 'a carrier-grade NAT (shared) address',
  multicast: 'a multicast address',
  broadcast: 'a broadcast address',
  documentation: 'a documentation-only address',
  benchmarking: 'a benchmarking address',
  reserved: 'a reserved address',
  invalid: 'not an IP address',
};

export function describeKind(kind: AddressKind): string {
  return KIND_WORDS[kind];
}

export { parseIPv4, parseIPv6 } from './ip.ts';

// ---------------------------------------------------------------------------------------------
// Classification

/** IPv4 special-purpose blocks (IANA registry, RFC 6890 and successors), most specific first. */
const V4_BLOCKS: [string, number, AddressKind][] = [
  ['255.255.255.255', 32, 'broadcast'],
  ['0.0.0.0', 8, 'unspecified'],
  ['10.0.0.0', 8, 'private'],
  ['100.64.0.0', 10, 'shared'],
  ['127.0.0.0', 8, 'loopback'],
  ['169.254.0.0', 16, 'link-local'],
  ['172.16.0.0', 12, 'private'],
  ['192.0.0.0', 24, 'reserved'],
  ['192.0.2.0', 24, 'documentation'],
  ['192.88.99.0', 24, 'reserved'],
  ['192.168.0.0', 16, 'private'],
  ['198.18.0.0', 15, 'benchmarking'],
  ['198.51.100.0', 24, 'documentation'],
  ['203.0.113.0', 24, 'documentation'],
  ['224.0.0.0', 4, 'multicast'],
  ['240.0.0.0', 4, 'reserved'],
];

const V4_TABLE = V4_BLOCKS.map(([base, bits, kind]) => {
  const size = 2 ** (32 - bits);
  const start = parseIPv4(base)!;
  return { start, end: start + size - 1, kind };
});

function classifyV4(value: number): AddressKind {
  for (const b of V4_TABLE) if (value >= b.start && value <= b.end) return b.kind;
  return 'public';
}

function classifyV6(g: number[]): AddressKind {
  const zeroUpTo = (n: number) => g.slice(0, n).every((x) => x === 0);
  const v4At = (i: number) => g[i]! * 65536 + g[i + 1]!;

  if (zeroUpTo(8)) return 'unspecified';
  if (zeroUpTo(7) && g[7] === 1) return 'loopback';
  // ::ffff:a.b.c.d (IPv4-mapped): the socket really talks IPv4 to a.b.c.d.
  if (zeroUpTo(5) && g[5] === 0xffff) return classifyV4(v4At(6));
  // ::ffff:0:a.b.c.d (IPv4-translated, SIIT) likewise.
  if (zeroUpTo(4) && g[4] === 0xffff && g[5] === 0) return classifyV4(v4At(6));
  // 64:ff9b::/96 well-known NAT64 prefix: a NAT64 gateway forwards to the embedded IPv4.
  if (g[0] === 0x64 && g[1] === 0xff9b && g.slice(2, 6).every((x) => x === 0)) return classifyV4(v4At(6));
  // 64:ff9b:1::/48 local-use NAT64.
  if (g[0] === 0x64 && g[1] === 0xff9b && g[2] === 1) return 'private';
  // 2002::/16 6to4: the IPv4 relay address sits in bits 16..47.
  if (g[0] === 0x2002) return classifyV4(v4At(1));
  // 2001:db8::/32 and 3fff::/20 documentation.
  if (g[0] === 0x2001 && g[1] === 0xdb8) return 'documentation';
  if (g[0] === 0x3fff && g[1]! < 0x1000) return 'documentation';
  // 2001:2::/48 benchmarking; the rest of 2001::/23 (Teredo, ORCHID, …) is protocol-reserved.
  if (g[0] === 0x2001 && g[1] === 2 && g[2] === 0) return 'benchmarking';
  if (g[0] === 0x2001 && g[1]! < 0x200) return 'reserved';
  if ((g[0]! & 0xfe00) === 0xfc00) return 'private'; // fc00::/7 unique local
  if ((g[0]! & 0xffc0) === 0xfe80) return 'link-local'; // fe80::/10
  if ((g[0]! & 0xffc0) === 0xfec0) return 'private'; // fec0::/10 deprecated site-local
  if ((g[0]! & 0xff00) === 0xff00) return 'multicast'; // ff00::/8
  // Only 2000::/3 is allocated global unicast; everything else (::/8 incl. IPv4-compatible, 100::/64
  // discard, …) is reserved.
  if ((g[0]! & 0xe000) !== 0x2000) return 'reserved';
  return 'public';
}

/** What kind of address an IPv4 or IPv6 literal is (brackets and a `%zone` are accepted for IPv6). */
export function classifyAddress(address: string): AddressKind {
  const v4 = parseIPv4(address);
  if (v4 !== undefined) return classifyV4(v4);
  const v6 = parseIPv6(address);
  if (v6 !== undefined) return classifyV6(v6);
  return 'invalid';
}

export const isPublicAddress = (address: string): boolean => classifyAddress(address) === 'public';

// ---------------------------------------------------------------------------------------------
// URL checks

export interface ResolvedAddress {
  address: string;
  family: number;
}

/** Resolves a host name to every address (tests inject their own). */
export type Resolver = (hostname: string, family?: 0 | 4 | 6) => Promise<ResolvedAddress[]>;

export const systemResolver: Resolver = (hostname, family = 0) => dnsLookup(hostname, { all: true, family, order: 'verbatim' });

export type UnsafeUrlReason = 'invalid_url' | 'protocol' | 'address' | 'unresolvable';

/** A URL (or the address it resolves to) that the guard refuses to call. */
export class UnsafeUrlError extends Error {
  readonly reason: UnsafeUrlReason;
  readonly code = 'EASEL_UNSAFE_URL';
  constructor(reason: UnsafeUrlReason, message: string) {
    super(message);
    this.name = 'UnsafeUrlError';
    this.reason = reason;
  }
}

export interface GuardOptions {
  /** Which non-public addresses may be called anyway (the operator's allowlist); metadata endpoints never. */
  policy?: OutboundPolicy;
  /** Name resolution; the system resolver (getaddrinfo) by default. */
  resolver?: Resolver;
  /** Gives up on a slow resolver after this long (default 5 s). */
  resolveTimeoutMs?: number;
}

export interface CheckUrlOptions extends GuardOptions {
  /** Schemes allowed, without the colon (default http and https). */
  protocols?: string[];
}

/** The host of a URL as an address or name: IPv6 brackets removed. */
export function urlHost(url: URL): string {
  const h = url.hostname;
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

function refuseAddress(host: string, address: string, policy: OutboundPolicy | undefined): UnsafeUrlError | undefined {
  if (policy?.isMetadata(host) || policy?.isMetadata(address) || METADATA.isMetadata(host) || METADATA.isMetadata(address)) {
    return new UnsafeUrlError('address', `${host === address ? address : `${host} (${address})`} is a cloud metadata endpoint, which easel never calls`);
  }
  const kind = classifyAddress(address);
  if (kind === 'public') return undefined;
  if (policy?.allowsPrivate(host, address)) return undefined;
  const what = host === address ? `${address} is` : `${host} resolves to ${address},`;
  return new UnsafeUrlError('address', `${what} ${describeKind(kind)}; only public addresses may be called`);
}

/** The metadata endpoints are refused even when no policy is given. */
const METADATA = new OutboundPolicy();

/** Throws UnsafeUrlError when `host` is an IP literal the policy does not allow (names are checked when resolved). */
export function assertPublicHost(host: string, opts: GuardOptions = {}): void {
  if (isIP(host) === 0) {
    if (METADATA.isMetadata(host)) throw refuseAddress(host, host, opts.policy)!;
    return;
  }
  const err = refuseAddress(host, host, opts.policy);
  if (err) throw err;
}

async function resolveAll(host: string, family: 0 | 4 | 6, opts: GuardOptions): Promise<ResolvedAddress[]> {
  const resolver = opts.resolver ?? systemResolver;
  const timeoutMs = opts.resolveTimeoutMs ?? 5000;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new UnsafeUrlError('unresolvable', `${host} did not resolve within ${timeoutMs} ms`)), timeoutMs);
    timer.unref?.();
  });
  try {
    const addrs = await Promise.race([resolver(host, family), timeout]);
    if (!addrs || addrs.length === 0) throw new UnsafeUrlError('unresolvable', `${host} has no addresses`);
    return addrs;
  } catch (err) {
    if (err instanceof UnsafeUrlError) throw err;
    const code = (err as NodeJS.ErrnoException)?.code;
    throw new UnsafeUrlError('unresolvable', `${host} could not be resolved${code ? ` (${code})` : ''}`);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves `host` (a name or literal) and refuses it when any address is not public. */
export async function resolvePublic(host: string, opts: GuardOptions = {}, family: 0 | 4 | 6 = 0): Promise<ResolvedAddress[]> {
  const literal = isIP(host);
  if (!literal && METADATA.isMetadata(host)) throw refuseAddress(host, host, opts.policy)!;
  const addrs = literal ? [{ address: host, family: literal }] : await resolveAll(host, family, opts);
  for (const a of addrs) {
    const err = refuseAddress(host, a.address, opts.policy);
    if (err) throw err;
  }
  return addrs;
}

/**
 * The early check: an absolute http(s) URL whose host resolves only to addresses the policy allows
 * (public ones, or what the operator listed). Throws UnsafeUrlError saying why.
 */
export async function checkUrl(input: string | URL, opts: CheckUrlOptions = {}): Promise<URL> {
  let url: URL;
  try {
    url = typeof input === 'string' ? new URL(input) : input;
  } catch {
    throw new UnsafeUrlError('invalid_url', 'is not an absolute URL');
  }
  const protocols = opts.protocols ?? ['http', 'https'];
  const scheme = url.protocol.replace(/:$/, '');
  if (!protocols.includes(scheme)) throw new UnsafeUrlError('protocol', `scheme "${scheme}" is not allowed (use ${protocols.join(' or ')})`);
  const host = urlHost(url);
  if (!host) throw new UnsafeUrlError('invalid_url', 'has no host');
  await resolvePublic(host, opts);
  return url;
}

function normalizeFamily(f: unknown): 0 | 4 | 6 {
  if (f === 4 || f === 'IPv4') return 4;
  if (f === 6 || f === 'IPv6') return 6;
  return 0;
}

/**
 * A `lookup` for node:net / node:http(s) that resolves with the guard's resolver and refuses (with an
 * UnsafeUrlError) when any address is not public. It supports both callback shapes net uses
 * (`all: true` for happy eyeballs, and a single address).
 */
export function guardedLookup(opts: GuardOptions = {}): LookupFunction {
  return (hostname, options, callback) => {
    const family = normalizeFamily(options?.family);
    resolvePublic(hostname, opts, family).then(
      (addrs) => {
        const usable = family === 0 ? addrs : addrs.filter((a) => a.family === family);
        if (usable.length === 0) {
          callback(new UnsafeUrlError('unresolvable', `${hostname} has no IPv${family} address`), '', undefined);
        } else if (options?.all) {
          callback(null, usable.map((a) => ({ address: a.address, family: a.family })));
        } else {
          callback(null, usable[0]!.address, usable[0]!.family);
        }
      },
      (err) => callback(err as NodeJS.ErrnoException, '', undefined),
    );
  };
}
