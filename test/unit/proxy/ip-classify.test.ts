// Classification and CIDR matching over the SSRF corpus, plus properties over generated addresses.
import { readFileSync } from 'node:fs';
import { BlockList } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { compileCidrList, parseCidr } from '../../../sidecar/policy/normalize/cidr.ts';
import type { AddressKind } from '../../../sidecar/proxy/ip-classify.ts';
import {
  ADDRESS_KINDS,
  classifyAddress,
  formatIp,
  isPublic,
  parseIp,
} from '../../../sidecar/proxy/ip-classify.ts';

interface ClassifyCase {
  note: string;
  ip: string;
  kind: AddressKind;
  embedded?: string;
}
interface CidrCase {
  note: string;
  cidr: string;
  ip: string;
  want: boolean;
}
interface CidrParseCase {
  note: string;
  cidr: string;
  want?: string;
  error?: boolean;
}

const corpus = parse(readFileSync(new URL('../../fixtures/ssrf-corpus.yaml', import.meta.url), 'utf8')) as {
  classify: ClassifyCase[];
  cidr: CidrCase[];
  cidr_parse: CidrParseCase[];
};

describe('classifyAddress', () => {
  it('corpus entries are well-formed (YAML would read some addresses as numbers)', () => {
    for (const c of corpus.classify) {
      expect(ADDRESS_KINDS, c.note).toContain(c.kind);
      expect(typeof c.ip, c.note).toBe('string');
    }
    for (const c of corpus.cidr)
      expect([typeof c.cidr, typeof c.ip, typeof c.want], c.note).toEqual(['string', 'string', 'boolean']);
    for (const c of corpus.cidr_parse) expect(typeof c.cidr, c.note).toBe('string');
  });

  it.each(corpus.classify.map((c) => [c.note, c] as const))('%s', (_note, c) => {
    const want = c.embedded === undefined ? { kind: c.kind } : { kind: c.kind, embedded: c.embedded };
    expect(classifyAddress(c.ip)).toEqual(want);
    expect(isPublic(classifyAddress(c.ip))).toBe(c.kind === 'public');
  });
});

/** `in_cidr: [net]` for one address, as the policy evaluates it; an invalid range contains nothing. */
const inCidr = (net: string, ip: string): boolean => compileCidrList([net])?.(ip) ?? false;

// The policy's `in_cidr` matcher, which decides the proxy's address rules: an invalid range compiles to nothing.
describe('in_cidr membership', () => {
  it.each(corpus.cidr.map((c) => [c.note, c] as const))('%s', (_note, c) => {
    const match = compileCidrList([c.cidr]);
    expect(match === undefined).toBe(!parseCidr(c.cidr).ok);
    expect(match?.(c.ip) ?? false).toBe(c.want);
  });
});

describe('parseCidr', () => {
  it.each(corpus.cidr_parse.map((c) => [c.note, c] as const))('%s', (_note, c) => {
    const parsed = parseCidr(c.cidr);
    if (c.error) {
      expect(parsed.ok).toBe(false);
      if (!parsed.ok) expect(parsed.detail).not.toBe('');
    } else {
      expect(parsed.ok && parsed.cidr.text).toBe(c.want);
    }
  });
});

// The non-public IPv4 ranges, written out independently of the implementation's table.
const NON_PUBLIC_V4 = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.0.2.0/24',
  '192.88.99.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '198.51.100.0/24',
  '203.0.113.0/24',
  '224.0.0.0/4',
  '240.0.0.0/4',
] as const;

const oracle = new BlockList();
for (const cidr of NON_PUBLIC_V4) {
  const [net, len] = cidr.split('/') as [string, string];
  oracle.addSubnet(net, Number(len), 'ipv4');
}

const u32 = (ip: string): number => ip.split('.').reduce((acc, part) => acc * 256 + Number(part), 0);
const v4 = (n: number): string => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
const hex16 = (n: number): string => (n & 0xffff).toString(16);

/** An IPv4 address inside one of the non-public ranges. */
const nonPublicV4 = fc
  .tuple(fc.constantFrom(...NON_PUBLIC_V4), fc.integer({ min: 0, max: 0xffffffff }))
  .map(([cidr, bits]) => {
    const [net, len] = cidr.split('/') as [string, string];
    const hostBits = 32 - Number(len);
    const host = hostBits === 0 ? 0 : bits % 2 ** hostBits;
    return v4(u32(net) + host);
  });

/**
 * Every IPv6 spelling that carries `ip`, and whether it may be public when `ip` is. `::0.0.0.0` and `::0.0.0.1` are
 * `::` and `::1` themselves, so they keep their own kind rather than the carried one.
 */
function embeddings(ip: string, rand: number): Array<{ form: string; mayBePublic: boolean; own?: boolean }> {
  const n = u32(ip);
  const hi = hex16(n >>> 16);
  const lo = hex16(n);
  return [
    { form: `::ffff:${ip}`, mayBePublic: true },
    { form: `::ffff:${hi}:${lo}`, mayBePublic: true },
    { form: `0:0:0:0:0:ffff:${hi}:${lo}`, mayBePublic: true },
    { form: `64:ff9b::${hi}:${lo}`, mayBePublic: true },
    { form: `64:ff9b::${ip}`, mayBePublic: true },
    { form: `2002:${hi}:${lo}::`, mayBePublic: true },
    { form: `2002:${hi}:${lo}:${hex16(rand)}::${hex16(rand >>> 16)}`, mayBePublic: true },
    { form: `::${ip}`, mayBePublic: false, own: n <= 1 },
    { form: `64:ff9b:1::${hi}:${lo}`, mayBePublic: false },
  ];
}

describe('properties', () => {
  it('classifyAddress never throws, and says invalid exactly when isIP says no', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ unit: 'binary' }), fc.ipV4Extended(), fc.ipV4(), fc.ipV6(), fc.string()),
        (text) => {
          const cls = classifyAddress(text);
          expect(ADDRESS_KINDS).toContain(cls.kind);
          expect(cls.kind === 'invalid').toBe(parseIp(text) === null);
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('every generated IPv4 and IPv6 address parses and round-trips through its canonical form', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6()), (text) => {
        const parsed = parseIp(text);
        expect(parsed).not.toBeNull();
        const canonical = formatIp(parsed!);
        expect(parseIp(canonical)).toEqual(parsed);
        expect(classifyAddress(canonical)).toEqual(classifyAddress(text));
        expect(new URL(`http://${parsed!.family === 6 ? `[${canonical}]` : canonical}/`).hostname).toBe(
          parsed!.family === 6 ? `[${canonical}]` : canonical,
        );
      }),
      { numRuns: 2000 },
    );
  });

  it('IPv4 is public exactly when it lies outside every non-public range (node:net BlockList as the oracle)', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), nonPublicV4), (ip) => {
        expect(isPublic(classifyAddress(ip))).toBe(!oracle.check(ip, 'ipv4'));
      }),
      { numRuns: 5000 },
    );
  });

  it('a non-public IPv4 stays non-public, with the same kind, in every IPv6 form that carries it', () => {
    fc.assert(
      fc.property(nonPublicV4, fc.integer({ min: 0, max: 0xffffffff }), (ip, rand) => {
        const inner = classifyAddress(ip);
        expect(isPublic(inner)).toBe(false);
        for (const { form, own } of embeddings(ip, rand)) {
          const cls = classifyAddress(form);
          expect(isPublic(cls), form).toBe(false);
          if (!own) expect(cls, form).toEqual({ kind: inner.kind, embedded: ip });
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('a public IPv4 is public when mapped, NAT64 or 6to4, and never through deprecated or local-use forms', () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.integer({ min: 0, max: 0xffffffff }), (ip, rand) => {
        fc.pre(isPublic(classifyAddress(ip)));
        for (const { form, mayBePublic } of embeddings(ip, rand)) {
          expect(classifyAddress(form), form).toEqual({
            kind: mayBePublic ? 'public' : 'reserved',
            embedded: ip,
          });
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('an IPv4 CIDR contains every address under it, in plain and mapped form', () => {
    fc.assert(
      fc.property(fc.ipV4(), fc.integer({ min: 0, max: 32 }), (ip, len) => {
        const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
        const net = `${v4((u32(ip) & mask) >>> 0)}/${len}`;
        expect(inCidr(net, ip)).toBe(true);
        expect(inCidr(net, `::ffff:${ip}`)).toBe(true);
        if (len > 0) {
          const flipped = v4((u32(ip) ^ (1 << (32 - len))) >>> 0);
          expect(inCidr(net, flipped)).toBe(false);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('an IPv6 CIDR contains every address under it and nothing across its last prefix bit', () => {
    fc.assert(
      fc.property(fc.ipV6(), fc.integer({ min: 0, max: 128 }), (ip, len) => {
        const parsed = parseIp(ip)!;
        const value = parsed.bytes.reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
        const full = (1n << 128n) - 1n;
        const mask = len === 0 ? 0n : (full << BigInt(128 - len)) & full;
        const toText = (x: bigint): string =>
          formatIp({
            family: 6,
            bytes: Uint8Array.from({ length: 16 }, (_, i) => Number((x >> BigInt(8 * (15 - i))) & 255n)),
          });
        const net = `${toText(value & mask)}/${len}`;
        expect(inCidr(net, ip)).toBe(true);
        if (len > 0) expect(inCidr(net, toText(value ^ (1n << BigInt(128 - len))))).toBe(false);
      }),
      { numRuns: 2000 },
    );
  });
});
