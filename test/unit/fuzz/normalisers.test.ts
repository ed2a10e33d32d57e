// Fuzzing the normalisers test/unit/policy/properties.test.ts does not reach: host names and host globs, CIDR
// membership, the proxy's own host and CONNECT-authority parsers, and above all the differential between what the
// policy decides on and what the proxy connects to. Two parsers that disagree on one string are a bypass.
import { isIP } from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compileCidrList, isIpAddress, parseCidr } from '../../../sidecar/policy/normalize/cidr.ts';
import { compileHostGlob, normalizeHostName } from '../../../sidecar/policy/normalize/host.ts';
import { normalizeUrl } from '../../../sidecar/policy/normalize/url.ts';
import { normalizeHost } from '../../../sidecar/proxy/address-guard.ts';
import { parseConnectTarget } from '../../../sidecar/proxy/connect-tunnel.ts';

const RUNS = { numRuns: Number(process.env['FUZZ_RUNS'] ?? 1000) };

// Host spellings that trip parsers: IPv4 in every base, IDNA, case, trailing dots, percent-escapes, brackets.
const hostPart = fc.oneof(
  fc.constantFrom(
    'api.example.com',
    'API.Example.COM.',
    'xn--bcher-kva.example',
    'bücher.example',
    '127.0.0.1',
    '2130706433',
    '0x7f.1',
    '0177.0.0.1',
    '127.1',
    '%31%32%37.0.0.1',
    '[::1]',
    '[::ffff:127.0.0.1]',
    '[fe80::1%25eth0]',
    'a..b',
    'example.com..',
    'ex ample.com',
    'ex%2eample.com',
    'evil.com\u3002example.com',
    'example.com\uff0e',
    '',
  ),
  fc.string({
    unit: fc.constantFrom(...'abcxyz019.-_%[]:@\\/#?'.split(''), 'Ä', '\u3002', '\u00ad'),
    maxLength: 20,
  }),
);
const urlString = fc
  .tuple(
    fc.constantFrom('http', 'https', 'HTTPS'),
    hostPart,
    fc.constantFrom('', ':80', ':8443', ':0', ':65536'),
    fc.constantFrom('/', '/a/../b', '?q=1', ''),
  )
  .map(([s, h, p, rest]) => `${s}://${h}${p}${rest}`);

describe('host normalisation: policy vs proxy', () => {
  it('never throws', () => {
    fc.assert(
      fc.property(fc.oneof(hostPart, fc.string()), (h) => {
        normalizeHostName(h);
        normalizeHost(h);
        compileHostGlob(h);
        parseConnectTarget(h);
        parseConnectTarget(`${h}:443`);
      }),
      RUNS,
    );
  });

  it('the host the policy judges a URL by is the host the proxy connects to', () => {
    fc.assert(
      fc.property(urlString, (raw) => {
        const policy = normalizeUrl(raw);
        let parsed: URL;
        try {
          parsed = new URL(raw);
        } catch {
          return;
        }
        const guard = normalizeHost(parsed.hostname);
        // Either side refusing is safe (the action is denied or never connects); both accepting must agree, up to the
        // policy's view of an IPv4-mapped IPv6 host as its IPv4 address (the guard connects to the same address).
        if (policy.ok && guard.ok) expect(normalizeHostName(guard.host)).toBe(policy.url.host);
      }),
      RUNS,
    );
  });

  it('a CONNECT authority is judged as the origin it connects to', () => {
    fc.assert(
      fc.property(hostPart, fc.integer({ min: 0, max: 70_000 }), (h, port) => {
        const t = parseConnectTarget(`${h}:${port}`);
        if (!t) return;
        expect(t.port).toBe(port);
        const policy = normalizeUrl(t.url);
        const guard = normalizeHost(t.host);
        if (policy.ok && guard.ok) {
          expect(normalizeHostName(guard.host)).toBe(policy.url.host);
          expect(policy.url.port).toBe(port);
          expect(policy.url.segments).toEqual([]);
        }
      }),
      RUNS,
    );
  });

  it('normalizeHostName is idempotent and agrees with the WHATWG host parser', () => {
    fc.assert(
      fc.property(hostPart, (h) => {
        const n = normalizeHostName(h);
        if (n === undefined) return;
        expect(normalizeHostName(n)).toBe(n);
        const whatwg = new URL(`http://${n}/`).hostname;
        expect(whatwg.replace(/\.$/, '')).toBe(n);
      }),
      RUNS,
    );
  });
});

describe('host globs', () => {
  const label = fc.constantFrom('a', 'api', 'b', 'example', 'com', 'xn--bcher-kva');
  const host = fc.array(label, { minLength: 1, maxLength: 5 }).map((l) => l.join('.'));
  const pattern = fc
    .array(fc.oneof(label, fc.constantFrom('*', '**')), { minLength: 1, maxLength: 5 })
    .map((l) => l.join('.'));

  // Reference: labels compared one by one, `*` one label, `**` one or more; written from the doc, not the code.
  function reference(pat: string[], h: string[]): boolean {
    if (pat.length === 0) return h.length === 0;
    const [p, ...rest] = pat;
    if (p === '**') return h.some((_, i) => i >= 0 && reference(rest, h.slice(i + 1)));
    if (h.length === 0) return false;
    return (p === '*' || p === h[0]) && reference(rest, h.slice(1));
  }

  it('match exactly the hosts the label rules say, never a suffix by accident', () => {
    fc.assert(
      fc.property(pattern, host, (p, h) => {
        const m = compileHostGlob(p);
        expect(m).toBeDefined();
        expect(m?.(h)).toBe(reference(p.split('.'), h.split('.')));
      }),
      RUNS,
    );
  });
});

describe('CIDR membership', () => {
  const ipv6WithZone = fc
    .tuple(
      fc.ipV6(),
      fc.string({ unit: fc.constantFrom('a', 'Z', '0', '-', '.', ':', '%', ' ', '_', 'é'), maxLength: 6 }),
    )
    .map(([ip, zone]) => `${ip}%${zone}`);
  const octets = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255));
  const toNum = (o: readonly number[]) => o.reduce((n, x) => n * 256 + x, 0);

  it('IPv4 membership agrees with plain bit arithmetic, and IPv4-mapped IPv6 counts as its IPv4 address', () => {
    fc.assert(
      fc.property(octets, fc.integer({ min: 0, max: 32 }), octets, (addr, prefix, ip) => {
        const size = 2 ** (32 - prefix);
        const network = Math.floor(toNum(addr) / size) * size;
        const net = [network >>> 24, (network >>> 16) & 255, (network >>> 8) & 255, network & 255];
        const match = compileCidrList([`${net.join('.')}/${prefix}`]);
        expect(match).toBeDefined();
        // The same range written with host bits set is refused, never widened to its network.
        if (network !== toNum(addr)) expect(compileCidrList([`${addr.join('.')}/${prefix}`])).toBeUndefined();
        const want = Math.floor(toNum(ip) / size) === Math.floor(toNum(net) / size);
        expect(match?.(ip.join('.'))).toBe(want);
        expect(match?.(`::ffff:${ip.join('.')}`)).toBe(want);
      }),
      RUNS,
    );
  });

  it('parseCidr never throws and accepts only an IP literal with an in-range decimal prefix', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ maxLength: 30 }),
          fc.tuple(fc.string({ maxLength: 15 }), fc.string({ maxLength: 4 })).map(([a, b]) => `${a}/${b}`),
        ),
        (raw) => {
          const p = parseCidr(raw);
          if (!p.ok) {
            expect(p.detail).not.toBe('');
            return;
          }
          const [net, prefix] = raw.includes('/') ? raw.split('/') : [raw, undefined];
          expect(isIP(net as string)).not.toBe(0);
          expect(net).not.toContain('%');
          if (prefix !== undefined) expect(String(Number(prefix))).toBe(prefix);
          expect(p.cidr.prefix).toBeLessThanOrEqual(p.cidr.family === 4 ? 32 : 128);
          const again = parseCidr(p.cidr.text);
          expect(again.ok && again.cidr.text).toBe(p.cidr.text);
        },
      ),
      RUNS,
    );
  });

  it('an address is parsed exactly when node:net isIP accepts it', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ maxLength: 40 }), fc.ipV4(), fc.ipV4Extended(), fc.ipV6(), ipv6WithZone),
        (s) => {
          expect(isIpAddress(s)).toBe(isIP(s) !== 0);
        },
      ),
      RUNS,
    );
  });

  it('a non-IP string is never inside any range', () => {
    const match = compileCidrList(['0.0.0.0/0', '::/0']);
    fc.assert(
      fc.property(fc.string({ maxLength: 20 }), (s) => {
        if (isIP(s) === 0 && isIP(s.replace(/^::ffff:/i, '')) === 0) expect(match?.(s)).toBe(false);
      }),
      RUNS,
    );
  });
});
