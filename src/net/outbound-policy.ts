/**
 * Which addresses easel may call on a user's behalf (webhook receivers today; any URL a request
 * names). Public addresses always; private ones only where the operator allows them, by host name
 * (`hooks.internal`, `*.svc.cluster.local`) or by network (`10.20.0.0/16`, `fd00:1::/64`); cloud
 * metadata endpoints never, whatever the config says (the credentials they hand out are the prize
 * of every SSRF).
 */
import { isIP } from 'node:net';
import { parseIPv4, parseIPv6 } from './ip.ts';

/** Instance metadata services (AWS, ECS tasks, GCP, Azure, Alibaba, Oracle) by address and name. */
const METADATA_ADDRESSES = ['169.254.169.254', '169.254.170.2', 'fd00:ec2::254', '100.100.100.200', '192.0.0.192'];
const METADATA_HOSTS = ['metadata.google.internal', 'metadata.goog', 'metadata', 'instance-data', 'instance-data.ec2.internal'];

interface Network {
  v6: boolean;
  /** The address as 8 (v6) or 2 (v4, as two 16-bit groups) groups. */
  groups: number[];
  bits: number;
}

function groupsOf(address: string): { v6: boolean; groups: number[] } | undefined {
  const v4 = parseIPv4(address);
  if (v4 !== undefined) return { v6: false, groups: [Math.floor(v4 / 65536), v4 % 65536] };
  const v6 = parseIPv6(address);
  if (!v6) return undefined;
  // IPv4-mapped IPv6 is the IPv4 address it carries.
  if (v6.slice(0, 5).every((g) => g === 0) && v6[5] === 0xffff) return { v6: false, groups: [v6[6]!, v6[7]!] };
  return { v6: true, groups: v6 };
}

/** Parses `a.b.c.d/n` or `x::y/n` (a bare address is a /32 or /128); throws saying what is wrong. */
export function parseNetwork(text: string): Network {
  const [addr, len, extra] = text.trim().split('/');
  const g = addr ? groupsOf(addr) : undefined;
  if (!g || extra !== undefined) throw new Error(`"${text}" is not an IPv4 or IPv6 network (write it as 10.0.0.0/8 or fd00::/8)`);
  const max = g.v6 ? 128 : 32;
  const bits = len === undefined ? max : Number(len);
  if (!Number.isInteger(bits) || bits < 0 || bits > max) throw new Error(`"${text}": the prefix length must be 0 to ${max}`);
  return { v6: g.v6, groups: g.groups, bits };
}

function contains(net: Network, address: string): boolean {
  const g = groupsOf(address);
  if (!g || g.v6 !== net.v6) return false;
  let left = net.bits;
  for (let i = 0; i < g.groups.length && left > 0; i++, left -= 16) {
    const take = Math.min(16, left);
    const mask = (0xffff << (16 - take)) & 0xffff;
    if ((g.groups[i]! & mask) !== (net.groups[i]! & mask)) return false;
  }
  return true;
}

const hostMatches = (pattern: string, host: string): boolean => (pattern.startsWith('*.') ? host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1 : host === pattern);

export interface OutboundConfig {
  /** Host names (exact, or `*.suffix`) that may resolve to private addresses. */
  allowHosts: readonly string[];
  /** Networks (CIDR) that may be called although they are not public. */
  allowNetworks: readonly string[];
}

export class OutboundPolicy {
  private readonly hosts: string[];
  private readonly networks: Network[];
  private readonly metadata: Network[];

  constructor(config: OutboundConfig = { allowHosts: [], allowNetworks: [] }) {
    this.hosts = config.allowHosts.map((h) => h.toLowerCase().replace(/\.$/, ''));
    this.networks = config.allowNetworks.map(parseNetwork);
    this.metadata = METADATA_ADDRESSES.map(parseNetwork);
  }

  /** A metadata endpoint (by name or address): never called. */
  isMetadata(hostOrAddress: string): boolean {
    const h = hostOrAddress.toLowerCase().replace(/\.$/, '');
    if (METADATA_HOSTS.includes(h)) return true;
    return isIP(h) !== 0 && this.metadata.some((n) => contains(n, h));
  }

  /** Whether a non-public `address` that `host` resolved to may be called anyway. */
  allowsPrivate(host: string, address: string): boolean {
    if (this.isMetadata(host) || this.isMetadata(address)) return false;
    const h = host.toLowerCase().replace(/\.$/, '');
    if (this.hosts.some((p) => hostMatches(p, h))) return true;
    return this.networks.some((n) => contains(n, address));
  }
}
