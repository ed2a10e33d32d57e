// Classifies IP addresses by special-purpose range (loopback, private, link-local, embeddings of those in IPv6 forms).
// Parsing and prefix arithmetic come from the policy's normaliser, so the guard and `in_cidr` read addresses alike.
import { formatV4, parseCidr, parseIp, prefixMatches } from '../policy/normalize/ip.ts';

export type { ParsedIp } from '../policy/normalize/ip.ts';
export { formatIp, parseIp, unmapIp } from '../policy/normalize/ip.ts';

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

const INVALID: AddressClass = Object.freeze({ kind: 'invalid' });

export function isPublic(cls: AddressClass): boolean {
  return cls.kind === 'public';
}

export function classifyAddress(ip: string): AddressClass {
  const parsed = parseIp(ip);
  if (!parsed) return INVALID;
  return parsed.family === 4 ? classifyV4(parsed.bytes) : classifyV6(parsed.bytes);
}

// ---- prefix arithmetic ----

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
