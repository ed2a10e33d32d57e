// Pure IP address arithmetic: parse canonical textual IPs, classify them by special-purpose range, match CIDRs.
// No I/O, so the policy layer's `address: {in_cidr}` condition can import it without pulling in node:dns.
import { isIP } from 'node:net';

export const ADDRESS_KINDS = [
  'public',
  'loopback',
  'private',
  'link_local',
  'cgnat',
  'unspecified',
  'multicast',
  'broadcast',
  'ula',
  'reserved',
  'documentation',
  'benchmarking',
  'invalid',
] as const;
export type AddressKind = (typeof ADDRESS_KINDS)[number];

export interface AddressClass {
  readonly kind: AddressKind;
  /** The IPv4 address carried inside an IPv6 form (mapped, compatible, NAT64, 6to4, Teredo client). */
  readonly embedded?: string;
}

export interface ParsedIp {
  readonly family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  readonly bytes: Uint8Array;
}

export interface Cidr {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
  readonly prefix: number;
  /** Canonical text, e.g. `10.0.0.0/8`. */
  readonly text: string;
}

export type CidrParse =
  | { readonly ok: true; readonly cidr: Cidr }
  | { readonly ok: false; readonly detail: string };

const INVALID: AddressClass = Object.freeze({ kind: 'invalid' });

/** Parses a canonical textual IP (whatever node:net isIP accepts); an IPv6 zone id is dropped. */
export function parseIp(ip: string): ParsedIp | null {
  if (typeof ip !== 'string') return null;
  const family = isIP(ip);
  if (family === 4) {
    const bytes = parseV4(ip);
    return bytes ? { family: 4, bytes } : null;
  }
  if (family === 6) {
    const bytes = parseV6(ip);
    return bytes ? { family: 6, bytes } : null;
  }
  return null;
}

export function formatIp(ip: ParsedIp): string {
  if (ip.family === 4) return formatV4(ip.bytes, 0);
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((ip.bytes[i]! << 8) | ip.bytes[i + 1]!);
  // RFC 5952: compress the longest run (length >= 2) of zero groups, the first one on a tie.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes the IPv4 address it stands for; anything else is returned as is. */
export function unmapIp(ip: ParsedIp): ParsedIp {
  if (ip.family === 6 && hasPrefix(ip.bytes, MAPPED)) return { family: 4, bytes: ip.bytes.slice(12) };
  return ip;
}

export function isPublic(cls: AddressClass): boolean {
  return cls.kind === 'public';
}

export function classifyAddress(ip: string): AddressClass {
  const parsed = parseIp(ip);
  if (!parsed) return INVALID;
  return parsed.family === 4 ? classifyV4(parsed.bytes) : classifyV6(parsed.bytes);
}

/** `a.b.c.d/n`, `x::/n`, or a bare address (a /32 or /128). Host bits set is an error: it usually hides a typo. */
export function parseCidr(text: string): CidrParse {
  if (typeof text !== 'string') return { ok: false, detail: 'not a string' };
  const slash = text.indexOf('/');
  const ipText = slash < 0 ? text : text.slice(0, slash);
  if (ipText.includes('%')) return { ok: false, detail: `zone ids are not allowed in a CIDR: ${text}` };
  const ip = parseIp(ipText);
  if (!ip) return { ok: false, detail: `not an IP address: ${ipText}` };
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > max) {
      return { ok: false, detail: `prefix length must be 0..${max}: ${text}` };
    }
    prefix = Number(p);
  }
  const net = maskBytes(ip.bytes, prefix);
  const canonical = `${formatIp({ family: ip.family, bytes: net })}/${prefix}`;
  if (!net.every((b, i) => b === ip.bytes[i])) {
    return { ok: false, detail: `host bits set in ${text} (the network is ${canonical})` };
  }
  return { ok: true, cidr: Object.freeze({ family: ip.family, bytes: net, prefix, text: canonical }) };
}

/**
 * Whether `ip` lies in `cidr`. An IPv4-mapped IPv6 address matches an IPv4 CIDR; an IPv4 address never matches an
 * IPv6 CIDR. Anything unparseable matches nothing, so an allow rule cannot be widened by a malformed input.
 */
export function cidrContains(cidr: string | Cidr, ip: string): boolean {
  let range: Cidr;
  if (typeof cidr === 'string') {
    const parsed = parseCidr(cidr);
    if (!parsed.ok) return false;
    range = parsed.cidr;
  } else {
    range = cidr;
  }
  const parsedIp = parseIp(ip);
  if (!parsedIp) return false;
  const addr = range.family === 4 ? unmapIp(parsedIp) : parsedIp;
  return addr.family === range.family && prefixMatches(addr.bytes, range.bytes, range.prefix);
}

// ---- parsing ----

function parseV4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    bytes[i] = n;
  }
  return bytes;
}

function parseV6(input: string): Uint8Array | null {
  const zone = input.indexOf('%');
  let text = zone < 0 ? input : input.slice(0, zone);
  const bytes = new Uint8Array(16);
  let v4: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(':');
  if (lastColon < 0) return null;
  if (text.slice(lastColon + 1).includes('.')) {
    v4 = parseV4(text.slice(lastColon + 1));
    if (!v4) return null;
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = text.split('::');
  if (halves.length > 2) return null;
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  if (halves.length === 1 ? head.length !== 8 : head.length + tail.length > 7) return null;
  const groups = [...head, ...new Array<string>(8 - head.length - tail.length).fill('0'), ...tail];
  for (let i = 0; i < 8; i++) {
    const g = groups[i]!;
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
    const n = Number.parseInt(g, 16);
    bytes[i * 2] = n >> 8;
    bytes[i * 2 + 1] = n & 0xff;
  }
  if (v4) bytes.set(v4, 12);
  return bytes;
}

function formatV4(bytes: Uint8Array, offset: number): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

// ---- prefix arithmetic ----

function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = bytes[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

function prefixMatches(addr: Uint8Array, net: Uint8Array, prefix: number): boolean {
  if (addr.length !== net.length) return false;
  const full = prefix >> 3;
  for (let i = 0; i < full; i++) if (addr[i] !== net[i]) return false;
  const rest = prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (addr[full]! & mask) === (net[full]! & mask);
}

interface Range {
  readonly bytes: Uint8Array;
  readonly prefix: number;
}

function range(text: string): Range {
  const parsed = parseCidr(text);
  if (!parsed.ok) throw new Error(`ip-classify: bad built-in range ${text}: ${parsed.detail}`);
  return parsed.cidr;
}

function hasPrefix(bytes: Uint8Array, r: Range): boolean {
  return prefixMatches(bytes, r.bytes, r.prefix);
}

// ---- IPv4 ----

// First match wins: the more specific ranges come before the ranges that contain them.
const V4_RANGES: ReadonlyArray<readonly [Range, AddressKind]> = (
  [
    ['0.0.0.0/32', 'unspecified'],
    ['0.0.0.0/8', 'reserved'],
    ['10.0.0.0/8', 'private'],
    ['100.64.0.0/10', 'cgnat'],
    ['127.0.0.0/8', 'loopback'],
    ['169.254.0.0/16', 'link_local'],
    ['172.16.0.0/12', 'private'],
    ['192.0.0.0/24', 'reserved'],
    ['192.0.2.0/24', 'documentation'],
    ['192.88.99.0/24', 'reserved'],
    ['192.168.0.0/16', 'private'],
    ['198.18.0.0/15', 'benchmarking'],
    ['198.51.100.0/24', 'documentation'],
    ['203.0.113.0/24', 'documentation'],
    ['224.0.0.0/4', 'multicast'],
    ['255.255.255.255/32', 'broadcast'],
    ['240.0.0.0/4', 'reserved'],
  ] as const
).map(([text, kind]) => [range(text), kind] as const);

function classifyV4(bytes: Uint8Array): AddressClass {
  for (const [r, kind] of V4_RANGES) if (hasPrefix(bytes, r)) return { kind };
  return { kind: 'public' };
}

// ---- IPv6 ----

const MAPPED = range('::ffff:0:0/96');
const COMPATIBLE = range('::/96');
const TRANSLATED = range('::ffff:0:0:0/96');
const NAT64 = range('64:ff9b::/96');
const NAT64_LOCAL = range('64:ff9b:1::/48');
const SIX_TO_FOUR = range('2002::/16');
const TEREDO = range('2001::/32');
const GLOBAL_UNICAST = range('2000::/3');

const V6_RANGES: ReadonlyArray<readonly [Range, AddressKind]> = (
  [
    ['100::/64', 'reserved'], // discard-only
    ['100:0:0:1::/64', 'reserved'], // dummy prefix
    ['2001:2::/48', 'benchmarking'],
    ['2001:db8::/32', 'documentation'],
    ['2001::/23', 'reserved'], // IETF protocol assignments
    ['3fff::/20', 'documentation'],
    ['5f00::/16', 'reserved'], // SRv6 SIDs
    ['fc00::/7', 'ula'],
    ['fe80::/10', 'link_local'],
    ['fec0::/10', 'private'], // deprecated site-local
    ['ff00::/8', 'multicast'],
  ] as const
).map(([text, kind]) => [range(text), kind] as const);

function classifyV6(bytes: Uint8Array): AddressClass {
  if (bytes.every((b) => b === 0)) return { kind: 'unspecified' };
  if (bytes.every((b, i) => (i === 15 ? b === 1 : b === 0))) return { kind: 'loopback' };
  if (hasPrefix(bytes, MAPPED)) return embedded(bytes.slice(12), 'public');
  // Deprecated forms that never carry traffic to the public internet: non-public outright.
  if (hasPrefix(bytes, COMPATIBLE) || hasPrefix(bytes, TRANSLATED))
    return embedded(bytes.slice(12), 'reserved');
  if (hasPrefix(bytes, NAT64)) return embedded(bytes.slice(12), 'public');
  // Local-use NAT64 is not globally reachable; read as the common /96 layout (RFC 6052 allows others).
  if (hasPrefix(bytes, NAT64_LOCAL)) return embedded(bytes.slice(12), 'reserved');
  if (hasPrefix(bytes, SIX_TO_FOUR)) return embedded(bytes.slice(2, 6), 'public');
  // Teredo tunnels to a NATed client whose IPv4 is stored inverted; never a plain public destination.
  if (hasPrefix(bytes, TEREDO))
    return embedded(
      bytes.slice(12).map((b) => b ^ 0xff),
      'reserved',
    );
  for (const [r, kind] of V6_RANGES) if (hasPrefix(bytes, r)) return { kind };
  // Outside 2000::/3 nothing is allocated for global unicast.
  if (!hasPrefix(bytes, GLOBAL_UNICAST)) return { kind: 'reserved' };
  return { kind: 'public' };
}

/** The class of an IPv6 form carrying `v4`: the IPv4's own class when non-public, else `whenPublic`. */
function embedded(v4: Uint8Array, whenPublic: AddressKind): AddressClass {
  const inner = classifyV4(v4);
  return { kind: isPublic(inner) ? whenPublic : inner.kind, embedded: formatV4(v4, 0) };
}
