// SSRF defence end to end: every spelling of an internal address, names that resolve inside, mixed answers and the
// sidecar's own listener, sent through the proxy as raw absolute-form requests and CONNECTs against loopback upstreams.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LookupAnswer } from '../../../sidecar/proxy/address-guard.ts';
import {
  type ProxyUnderTest,
  rawConnect,
  rawProxyRequest,
  startProxy,
  startUpstream,
  type Upstream,
  v4,
} from './support.ts';

interface Ports {
  /** HTTP upstream on 127.0.0.1. */
  readonly v4: number;
  /** HTTP upstream on ::1. */
  readonly v6: number;
  /** The proxy's own listener (known once that policy's proxy is up). */
  readonly self: number;
}

const header = 'agent: ssrf-test\nrules:\n';
const rule = (name: string, conditions: string) =>
  `  - name: ${name}\n    action: network\n${conditions ? `    conditions:\n${conditions}` : ''}    effect: ALLOW\n`;
const loopbackRanges = '      address: { in_cidr: ["127.0.0.0/8", "::1/128"] }\n';

const POLICIES = {
  /** "The whole web": a broad allow that must still never reach an internal address. */
  open: () => header + rule('open-web', ''),
  /** The same, plus the explicit address rule that lets loopback through. */
  loopback: () => header + rule('loopback-by-address', loopbackRanges) + rule('open-web', ''),
  /** Names allowed by URL only: whatever they resolve to must be public. */
  urlOnly: (p: Ports) =>
    header +
    rule('allowed-by-url', `      url: { starts_with: "http://allowed.test:${p.v4}" }\n`) +
    rule('mixed-by-url', `      url: { starts_with: "http://mixed.test:${p.v4}" }\n`),
  /** Names allowed by URL and by an address rule for loopback. */
  urlAndAddress: (p: Ports) =>
    header +
    rule('allowed', `      url: { starts_with: "http://allowed.test:${p.v4}" }\n${loopbackRanges}`) +
    rule('mixed', `      url: { starts_with: "http://mixed.test:${p.v4}" }\n${loopbackRanges}`) +
    rule('rebind', `      url: { starts_with: "http://rebind.test:${p.v4}" }\n${loopbackRanges}`) +
    rule('self', `      url: { starts_with: "http://self.test:${p.self}" }\n${loopbackRanges}`),
  /** CONNECT: an origin-level rule. */
  origin: (p: Ports) =>
    header +
    rule('tunnel-origin', `      url: { starts_with: "https://allowed.test:${p.v4}" }\n${loopbackRanges}`),
  /** CONNECT: only a path-scoped rule on the same origin, which a tunnel can never satisfy. */
  pathOnly: (p: Ports) =>
    header +
    rule('tunnel-path', `      url: { starts_with: "https://allowed.test:${p.v4}/api" }\n${loopbackRanges}`),
} as const;
type PolicyName = keyof typeof POLICIES;

const DNS: Record<string, ReadonlyArray<LookupAnswer>> = {
  'allowed.test': [v4('127.0.0.1')],
  'rebind.test': [v4('169.254.169.254')],
  // A public answer first, then an internal one: the policy must accept every address, not just the pinned one.
  'mixed.test': [v4('93.184.216.34'), v4('127.0.0.1')],
  'self.test': [v4('127.0.0.1')],
};

interface Case {
  readonly note: string;
  readonly policy: PolicyName;
  readonly mode: 'http' | 'connect';
  readonly target: (p: Ports) => string;
  readonly status: number;
  /** Which upstream must have been reached (http mode). */
  readonly hit?: 'v4' | 'v6';
  /** The audited reason of the final verdict. */
  readonly reason?: string;
}

const http = (
  note: string,
  policy: PolicyName,
  target: Case['target'],
  status: number,
  more: Partial<Case> = {},
) => ({ note, policy, mode: 'http', target, status, ...more }) as Case;
const tunnel = (
  note: string,
  policy: PolicyName,
  target: Case['target'],
  status: number,
  more: Partial<Case> = {},
) => ({ note, policy, mode: 'connect', target, status, ...more }) as Case;

const ENCODINGS: ReadonlyArray<readonly [string, (p: Ports) => string, 'v4' | 'v6']> = [
  ['decimal integer', (p) => `http://2130706433:${p.v4}/`, 'v4'],
  ['hex and short form', (p) => `http://0x7f.1:${p.v4}/`, 'v4'],
  ['octal first octet', (p) => `http://0177.0.0.1:${p.v4}/`, 'v4'],
  ['two-part short form', (p) => `http://127.1:${p.v4}/`, 'v4'],
  ['plain dotted', (p) => `http://127.0.0.1:${p.v4}/`, 'v4'],
  ['IPv6 loopback', (p) => `http://[::1]:${p.v6}/`, 'v6'],
  ['IPv4-mapped IPv6', (p) => `http://[::ffff:127.0.0.1]:${p.v4}/`, 'v4'],
  ['IPv4-mapped IPv6, hex', (p) => `http://[::ffff:7f00:1]:${p.v4}/`, 'v4'],
];

const CASES: Case[] = [
  ...ENCODINGS.flatMap(([note, target, upstream]) => [
    http(`${note}: a broad allow does not reach loopback`, 'open', target, 403, {
      reason: 'address_blocked',
    }),
    http(`${note}: the explicit address rule does`, 'loopback', target, 200, { hit: upstream }),
  ]),
  http('cloud metadata', 'open', () => 'http://169.254.169.254/latest/meta-data/', 403, {
    reason: 'address_blocked',
  }),
  http('cloud metadata, not in the loopback rule', 'loopback', () => 'http://169.254.169.254/', 403, {
    reason: 'address_blocked',
  }),
  http('cloud metadata as mapped IPv6', 'open', () => 'http://[::ffff:169.254.169.254]/', 403, {
    reason: 'address_blocked',
  }),
  http('private range', 'open', () => 'http://10.0.0.1/', 403, { reason: 'address_blocked' }),
  http('0.0.0.0 (which lands on loopback)', 'open', (p) => `http://0.0.0.0:${p.v4}/`, 400, {
    reason: 'invalid_host',
  }),
  http(
    'allowed name resolving to loopback, URL rule only',
    'urlOnly',
    (p) => `http://allowed.test:${p.v4}/`,
    403,
    {
      reason: 'address_blocked',
    },
  ),
  http(
    'allowed name resolving to loopback, with address rule',
    'urlAndAddress',
    (p) => `http://allowed.test:${p.v4}/`,
    200,
    {
      hit: 'v4',
    },
  ),
  http('allowed name resolving to metadata', 'urlAndAddress', (p) => `http://rebind.test:${p.v4}/`, 403, {
    reason: 'no_rule_matched',
  }),
  http(
    'mixed public and loopback answers, URL rule only',
    'urlOnly',
    (p) => `http://mixed.test:${p.v4}/`,
    403,
    {
      reason: 'address_blocked',
    },
  ),
  http(
    'mixed public and loopback answers, loopback address rule',
    'urlAndAddress',
    (p) => `http://mixed.test:${p.v4}/`,
    403,
    {
      reason: 'no_rule_matched',
    },
  ),
  http('the sidecar itself by IP', 'loopback', (p) => `http://127.0.0.1:${p.self}/`, 403, {
    reason: 'address_blocked',
  }),
  http('the sidecar itself by mapped IPv6', 'loopback', (p) => `http://[::ffff:127.0.0.1]:${p.self}/`, 403, {
    reason: 'address_blocked',
  }),
  http(
    'the sidecar itself by a name the policy allows',
    'urlAndAddress',
    (p) => `http://self.test:${p.self}/`,
    403,
    {
      reason: 'address_blocked',
    },
  ),

  tunnel('decimal integer', 'open', (p) => `2130706433:${p.v4}`, 403, { reason: 'address_blocked' }),
  tunnel('decimal integer with the address rule', 'loopback', (p) => `2130706433:${p.v4}`, 200),
  tunnel('IPv6 loopback', 'open', (p) => `[::1]:${p.v6}`, 403, { reason: 'address_blocked' }),
  tunnel('cloud metadata', 'open', () => '169.254.169.254:443', 403, { reason: 'address_blocked' }),
  tunnel('the sidecar itself', 'loopback', (p) => `127.0.0.1:${p.self}`, 403, { reason: 'address_blocked' }),
  tunnel('origin-level rule', 'origin', (p) => `allowed.test:${p.v4}`, 200),
  tunnel('only a path-scoped rule on that origin', 'pathOnly', (p) => `allowed.test:${p.v4}`, 403, {
    reason: 'no_rule_matched',
  }),
  tunnel('a port the policy does not allow', 'origin', (p) => `allowed.test:${p.v4 + 1}`, 403, {
    reason: 'no_rule_matched',
  }),
];

describe('SSRF through the proxy', () => {
  let up4: Upstream;
  let up6: Upstream;
  const proxies = new Map<PolicyName, ProxyUnderTest>();

  beforeAll(async () => {
    up4 = await startUpstream();
    up6 = await startUpstream(undefined, '::1');
  });
  afterAll(async () => {
    for (const p of proxies.values()) await p.close();
    await up4.close();
    await up6.close();
  });

  async function proxyFor(name: PolicyName): Promise<{ p: ProxyUnderTest; ports: Ports }> {
    const base = { v4: up4.port, v6: up6.port };
    let p = proxies.get(name);
    if (!p) {
      p = await startProxy({ policy: (self) => POLICIES[name]({ ...base, self }), dns: DNS });
      proxies.set(name, p);
    }
    return { p, ports: { ...base, self: p.port } };
  }

  it.each(CASES.map((c) => [`${c.mode} ${c.note} (${c.policy})`, c] as const))('%s', async (_name, c) => {
    const { p, ports } = await proxyFor(c.policy);
    const seen4 = up4.seen.length;
    const seen6 = up6.seen.length;
    const calls = p.enforcer.calls.length;
    const target = c.target(ports);

    let status: number;
    let decisionId: string | undefined;
    if (c.mode === 'http') {
      const res = await rawProxyRequest(p.port, target);
      status = res.status;
      decisionId = res.headers['x-sidecar-decision-id'];
    } else {
      const res = await rawConnect(p.port, target);
      status = res.status;
      decisionId = res.headers['x-sidecar-decision-id'];
      res.socket.destroy();
    }

    expect(status).toBe(c.status);
    expect(p.enforcer.calls.length).toBeGreaterThan(calls);
    const last = p.enforcer.last();
    expect(decisionId).toBe(last.verdict.decisionId);
    expect(last.verdict.effect).toBe(c.status === 200 ? 'ALLOW' : 'DENY');
    if (c.reason) expect(last.verdict.decision.reason).toBe(c.reason);
    expect(up4.seen.length - seen4).toBe(c.hit === 'v4' ? 1 : 0);
    expect(up6.seen.length - seen6).toBe(c.hit === 'v6' ? 1 : 0);
    if (c.status !== 200) {
      // Refused before any connection: only loopback upstreams exist here, and neither saw a thing.
      expect(last.request.action).toMatchObject({
        type: 'network',
        method: c.mode === 'http' ? 'GET' : 'CONNECT',
      });
    }
  });

  it('resolved a name only when the policy could allow it', async () => {
    const { p, ports } = await proxyFor('urlOnly');
    const before = p.asked.length;
    const res = await rawProxyRequest(p.port, `http://rebind.test:${ports.v4}/`);
    expect(res.status).toBe(403);
    expect(p.asked.length).toBe(before);
  });
});
