// IP literals and CIDR ranges as bytes: the one parser behind the policy's `in_cidr` and the proxy's address guard.
// Pure arithmetic, no node:net: it accepts exactly the text node:net's isIP accepts (a property test holds it to
// that), so the address the guard classified and the address a rule's range is checked against are read alike.

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

const V4_PART = /^(?:0|[1-9][0-9]{0,2})$/;
const V6_GROUP = /^[0-9a-fA-F]{1,4}$/;
// What isIP allows after `%`; the zone names an interface and says nothing about which address it is.
const ZONE = /^[0-9a-zA-Z.:-]+$/;
const PREFIX = /^(?:0|[1-9][0-9]{0,2})$/;

/** Parses a textual IPv4 (dotted quad, no leading zeros) or IPv6 address; an IPv6 zone id is dropped. */
export function parseIp(text: string): ParsedIp | null {
  if (typeof text !== 'string') return null;
  if (!text.includes(':')) {
    const bytes = parseV4(text);
    return bytes ? { family: 4, bytes } : null;
  }
  const bytes = parseV6(text);
  return bytes ? { family: 6, bytes } : null;
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

export function formatV4(bytes: Uint8Array, offset: number): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

const MAPPED_PREFIX = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] as const;

/** An IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes the IPv4 address it stands for; anything else is returned as is. */
export function unmapIp(ip: ParsedIp): ParsedIp {
  if (ip.family === 6 && MAPPED_PREFIX.every((b, i) => ip.bytes[i] === b)) {
    return { family: 4, bytes: ip.bytes.slice(12) };
  }
  return ip;
}

/**
 * `a.b.c.d/n`, `x::/n`, or a bare address (a /32 or /128). Refused, each with a reason: a prefix with a sign, space
 * or leading zero; zone ids; and host bits set (`10.0.0.1/8`), which usually hides a typo and would otherwise
 * silently widen the range to the whole network.
 */
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
    if (!PREFIX.test(p) || Number(p) > max) {
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
 * Whether `ip` lies in `range`. An IPv4-mapped IPv6 address matches an IPv4 range; an IPv4 address never matches an
 * IPv6 range. Anything unparseable matches nothing, so an allow rule cannot be widened by a malformed input.
 */
export function cidrContains(range: Cidr, ip: string | ParsedIp): boolean {
  const parsed = typeof ip === 'string' ? parseIp(ip) : ip;
  if (!parsed) return false;
  const addr = range.family === 4 ? unmapIp(parsed) : parsed;
  return addr.family === range.family && prefixMatches(addr.bytes, range.bytes, range.prefix);
}

export function prefixMatches(addr: Uint8Array, net: Uint8Array, prefix: number): boolean {
  if (addr.length !== net.length) return false;
  const full = prefix >> 3;
  for (let i = 0; i < full; i++) if (addr[i] !== net[i]) return false;
  const rest = prefix & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (addr[full]! & mask) === (net[full]! & mask);
}

function maskBytes(bytes: Uint8Array, prefix: number): Uint8Array {
  const out = new Uint8Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) {
    const bits = Math.max(0, Math.min(8, prefix - i * 8));
    out[i] = bytes[i]! & ((0xff << (8 - bits)) & 0xff);
  }
  return out;
}

function parseV4(text: string): Uint8Array | null {
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!V4_PART.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    bytes[i] = n;
  }
  return bytes;
}

function parseV6(input: string): Uint8Array | null {
  const zone = input.indexOf('%');
  if (zone >= 0 && !ZONE.test(input.slice(zone + 1))) return null;
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
    if (!V6_GROUP.test(g)) return null;
    const n = Number.parseInt(g, 16);
    bytes[i * 2] = n >> 8;
    bytes[i * 2 + 1] = n & 0xff;
  }
  if (v4) bytes.set(v4, 12);
  return bytes;
}
