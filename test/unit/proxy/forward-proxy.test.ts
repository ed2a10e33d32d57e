// Absolute-form requests through the proxy with undici's ProxyAgent against real loopback upstreams: what reaches
// the upstream, what comes back, what was audited, what was never looked up, and how limits and failures end.
import { once } from 'node:events';
import { connect } from 'node:net';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  closedPort,
  type ProxyUnderTest,
  policyFrom,
  rawProxyRequest,
  startProxy,
  startUpstream,
  type Upstream,
  type UpstreamHandler,
  v4,
} from './support.ts';

const AGENT = 'proxy-test';

/** Allows the named upstream (and an approval-gated twin); nothing else. */
const policyFor = (port: number) => `
agent: ${AGENT}
rules:
  - name: named-upstream
    action: network
    conditions:
      url: { starts_with: "http://allowed.test:${port}" }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
  - name: gated-upstream
    action: network
    conditions:
      url: { starts_with: "http://gated.test:${port}" }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: REQUIRE_APPROVAL
  - name: unresolvable
    action: network
    conditions:
      url: { starts_with: "http://missing.test:${port}" }
    effect: ALLOW
`;

const DNS = {
  'allowed.test': [v4('127.0.0.1')],
  'gated.test': [v4('127.0.0.1')],
};

async function get(
  p: ProxyUnderTest,
  url: string,
  opts: { method?: string; body?: string | Buffer | Readable } = {},
) {
  const res = await request(url, {
    dispatcher: p.agent,
    method: (opts.method ?? 'GET') as 'GET',
    ...(opts.body === undefined ? {} : { body: opts.body }),
  });
  const text = await res.body.text();
  return { status: res.statusCode, headers: res.headers, body: text };
}

function errorOf(body: string): { code: string; message: string; decision_id?: string } {
  return (JSON.parse(body) as { error: { code: string; message: string; decision_id?: string } }).error;
}

describe('allowed requests', () => {
  let upstream: Upstream;
  let p: ProxyUnderTest;
  beforeAll(async () => {
    upstream = await startUpstream();
    p = await startProxy({ policy: policyFor(upstream.port), dns: DNS });
  });
  afterAll(async () => {
    await p.close();
    await upstream.close();
  });
  afterEach(() => {
    upstream.seen.length = 0;
  });

  it.each([
    { note: 'GET with a query', method: 'GET', path: '/data?q=1&r=two', body: undefined },
    { note: 'POST with a body', method: 'POST', path: '/submit', body: '{"hello":"upstream"}' },
    { note: 'PUT with an empty body', method: 'PUT', path: '/empty', body: '' },
    { note: 'dot segments resolved as the policy saw them', method: 'GET', path: '/a/../b', body: undefined },
  ])('$note reaches the upstream once, with the agent-named Host', async ({ method, path, body }) => {
    const res = await get(p, `http://allowed.test:${upstream.port}${path}`, {
      method,
      ...(body === undefined ? {} : { body }),
    });
    expect(res.status).toBe(200);
    expect(res.body).toBe('hello from upstream');
    const call = p.enforcer.last();
    expect(res.headers['x-sidecar-decision-id']).toBe(call.verdict.decisionId);
    expect(call.method).toBe('decide');
    expect(call.request.trusted?.addresses).toEqual(['127.0.0.1']);
    expect(call.request.nonPublicAddress).toBe(true);
    expect(call.request.action).toEqual({
      type: 'network',
      url: new URL(`http://allowed.test:${upstream.port}${path}`).href,
      method,
    });

    expect(upstream.seen).toHaveLength(1);
    const seen = upstream.seen[0]!;
    expect(seen.method).toBe(method);
    expect(seen.url).toBe(new URL(path, 'http://x').pathname + new URL(path, 'http://x').search);
    expect(seen.headers.host).toBe(`allowed.test:${upstream.port}`);
    expect(seen.body).toBe(body ?? '');
    // The decision id goes back to the agent, never forward to the upstream.
    expect(seen.headers['x-sidecar-decision-id']).toBeUndefined();
  });

  it('strips hop-by-hop headers in both directions and never lets the upstream forge the decision id', async () => {
    const res = await rawProxyRequest(p.port, `http://allowed.test:${upstream.port}/hop`, {
      headers: {
        connection: 'keep-alive, x-agent-private',
        'x-agent-private': 'hop',
        'keep-alive': 'timeout=1',
        te: 'trailers',
        'proxy-authorization': 'Basic c2VjcmV0',
        'proxy-connection': 'keep-alive',
        upgrade: 'websocket',
        'x-kept': 'end-to-end',
      },
    });
    expect(res.status).toBe(200);
    const seen = upstream.seen[0]!;
    for (const h of [
      'x-agent-private',
      'keep-alive',
      'te',
      'proxy-authorization',
      'proxy-connection',
      'upgrade',
    ]) {
      expect(seen.headers[h], h).toBeUndefined();
    }
    expect(seen.headers['x-kept']).toBe('end-to-end');
    expect(seen.headers.via).toBe('1.1 agent-sidecar');

    expect(res.headers['x-upstream']).toBe('yes');
    expect(res.headers['x-upstream-private']).toBeUndefined();
    expect(res.headers['x-sidecar-decision-id']).toBe(p.enforcer.last().verdict.decisionId);
    expect(res.headers['x-sidecar-decision-id']).not.toBe('forged-by-upstream');
  });

  it('streams a large response back unchanged', async () => {
    const big = Buffer.alloc(3 * 1024 * 1024, 'abcdefgh');
    const local = await startUpstream((_req, _body, res) => {
      res.writeHead(200, { 'content-length': big.length });
      res.end(big);
    });
    const q = await startProxy({ policy: policyFor(local.port), dns: DNS });
    try {
      const res = await request(`http://allowed.test:${local.port}/big`, { dispatcher: q.agent });
      const got = Buffer.from(await res.body.arrayBuffer());
      expect(got.equals(big)).toBe(true);
      await q.close();
      const line = q.logs.find((l) => l['msg'] === 'decision');
      expect(line?.['bytes_out']).toBe(big.length);
    } finally {
      await local.close();
    }
  });

  it('does not follow redirects: the 3xx goes back to the agent and the next hop is never looked up', async () => {
    const local = await startUpstream((_req, _body, res) => {
      res.writeHead(302, { location: 'http://elsewhere.test/next' });
      res.end();
    });
    const q = await startProxy({ policy: policyFor(local.port), dns: DNS });
    try {
      const res = await get(q, `http://allowed.test:${local.port}/moved`);
      expect(res.status).toBe(302);
      expect(res.headers.location).toBe('http://elsewhere.test/next');
      expect(local.seen).toHaveLength(1);
      expect(q.asked).toEqual(['allowed.test']);
    } finally {
      await q.close();
      await local.close();
    }
  });

  it.each([
    { note: 'approved', approve: true, status: 200, hits: 1 },
    { note: 'refused by the approver', approve: false, status: 403, hits: 0 },
  ])(
    'REQUIRE_APPROVAL passes the pre-DNS pass and waits for the enforcer ($note)',
    async ({ approve, status, hits }) => {
      p.enforcer.approve = () => approve;
      const res = await get(p, `http://gated.test:${upstream.port}/gated`);
      p.enforcer.approve = () => false;
      expect(res.status).toBe(status);
      expect(upstream.seen).toHaveLength(hits);
      expect(p.enforcer.last().request.signal).toBeInstanceOf(AbortSignal);
    },
  );

  it('writes one canonical decision line per request, and counts it in the proxy metrics', async () => {
    const before = p.logs.length;
    const metric = async (name: 'proxyBytes' | 'proxySeconds', label: Record<string, string>) => {
      const { values } = (await p.metrics[name].get()) as {
        values: Array<{ value: number; labels: Record<string, unknown>; metricName?: string }>;
      };
      // A histogram reports buckets, sum and count: compare the count.
      const sample = values.find(
        (v) =>
          (name === 'proxyBytes' || v.metricName?.endsWith('_count')) &&
          Object.entries(label).every(([k, want]) => v.labels[k] === want),
      );
      return sample?.value ?? 0;
    };
    const upBefore = await metric('proxyBytes', { direction: 'up' });
    const downBefore = await metric('proxyBytes', { direction: 'down' });
    const countBefore = await metric('proxySeconds', { mode: 'http' });
    await get(p, `http://allowed.test:${upstream.port}/logged`, { method: 'POST', body: 'twelve bytes' });
    const lines = p.logs.slice(before);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      msg: 'decision',
      component: 'proxy',
      decision_id: p.enforcer.last().verdict.decisionId,
      agent: AGENT,
      kind: 'proxy',
      method: 'POST',
      host: 'allowed.test',
      port: upstream.port,
      status: 200,
      bytes_in: 12,
      bytes_out: 'hello from upstream'.length,
      effect: 'ALLOW',
      rule: 'named-upstream',
      reason: 'matched',
    });
    expect(typeof lines[0]?.['duration_ms']).toBe('number');
    expect((await metric('proxyBytes', { direction: 'up' })) - upBefore).toBe(12);
    expect((await metric('proxyBytes', { direction: 'down' })) - downBefore).toBe(
      'hello from upstream'.length,
    );
    expect((await metric('proxySeconds', { mode: 'http' })) - countBefore).toBe(1);
  });
});

describe('denied requests', () => {
  let upstream: Upstream;
  let p: ProxyUnderTest;
  beforeAll(async () => {
    upstream = await startUpstream();
    // Without the approval-gated rule, so every refusal here is the policy's DENY (an approval rule matching what
    // cannot be evaluated is refused before DNS as well: see unevaluable-before-dns.test.ts).
    p = await startProxy({
      policy: policyFor(upstream.port).replace(
        / {2}- name: gated-upstream[\s\S]*?effect: REQUIRE_APPROVAL\n/,
        '',
      ),
      dns: { ...DNS, 'denied.test': [v4('127.0.0.1')] },
    });
  });
  afterAll(async () => {
    await p.close();
    await upstream.close();
  });

  it.each([
    { note: 'another host', url: (port: number) => `http://denied.test:${port}/` },
    { note: 'another port', url: (port: number) => `http://allowed.test:${port + 1}/` },
    { note: 'https on the allowed origin', url: (port: number) => `https://allowed.test:${port}/` },
    {
      note: 'an encoded slash in the path (unevaluable, so never allowed)',
      url: (port: number) => `http://allowed.test:${port}/a%2f..%2fadmin`,
    },
  ])('$note: 403, uniform body, upstream not hit, denial audited, no DNS lookup', async ({ url }) => {
    const calls = p.enforcer.calls.length;
    const res = await rawProxyRequest(p.port, url(upstream.port));
    expect(res.status).toBe(403);
    expect(res.headers['content-type']).toBe('application/json');
    const call = p.enforcer.last();
    expect(p.enforcer.calls).toHaveLength(calls + 1);
    expect(call.method).toBe('decide');
    expect(call.verdict.effect).toBe('DENY');
    expect(call.request.trusted).toBeUndefined();
    expect(JSON.parse(res.body)).toEqual({
      error: {
        code: 'SIDECAR_ERR_POLICY_DENIED',
        message: 'The action was denied by policy.',
        decision_id: call.verdict.decisionId,
      },
    });
    expect(res.headers['x-sidecar-decision-id']).toBe(call.verdict.decisionId);
    expect(res.body).not.toContain('named-upstream');
    expect(upstream.seen).toHaveLength(0);
    expect(p.asked).toEqual([]);
  });

  it.each([
    { note: 'an invalid IPv6 literal', target: 'http://[zz]/' },
    { note: 'an IPv4 literal with five parts', target: 'http://1.2.3.4.5/' },
    { note: 'an IPv4 literal out of range', target: 'http://256.256.256.256/' },
    { note: 'userinfo in the target', target: 'http://user:pw@allowed.test/' },
    { note: 'origin-form where absolute-form belongs', target: '/relative' },
  ])('a target that does not parse ($note) is a 400, still audited', async ({ target }) => {
    const res = await rawProxyRequest(p.port, target);
    expect(res.status).toBe(400);
    expect(errorOf(res.body).code).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
    const call = p.enforcer.last();
    expect(call.method).toBe('refuse');
    expect(call.verdict.decision.reason).toBe('malformed_action');
    expect(errorOf(res.body).decision_id).toBe(call.verdict.decisionId);
  });

  it('a name the policy allows but DNS does not know: 502, refusal audited as dns_failed', async () => {
    const asked = p.asked.length;
    const res = await rawProxyRequest(p.port, `http://missing.test:${upstream.port}/`);
    expect(res.status).toBe(502);
    expect(errorOf(res.body).code).toBe('SIDECAR_ERR_UPSTREAM_UNREACHABLE');
    const call = p.enforcer.last();
    expect(call.method).toBe('refuse');
    expect(call.verdict.decision.reason).toBe('dns_failed');
    expect(p.asked.slice(asked)).toEqual(['missing.test']);
    const metric = await p.metrics.upstreamErrors.get();
    expect(metric.values.find((v) => v.labels.kind === 'dns')?.value).toBe(1);
  });
});

// The common SSRF policy: a DENY on a range first, then what the agent may reach. Before DNS the range cannot be
// known, so the DENY must not stop the name from being resolved; after DNS it decides on the real addresses.
describe('a DENY on an address range ahead of the allow rules', () => {
  let upstream: Upstream;
  let p: ProxyUnderTest;
  beforeAll(async () => {
    upstream = await startUpstream();
    p = await startProxy({
      policy: `
agent: ${AGENT}
rules:
  - name: no-metadata
    action: network
    conditions:
      address: { in_cidr: ["169.254.0.0/16"] }
    effect: DENY
  - name: named-upstream
    action: network
    conditions:
      url: { starts_with: "http://allowed.test:${upstream.port}" }
      address: { in_cidr: ["127.0.0.0/8", "169.254.0.0/16"] }
    effect: ALLOW
`,
      dns: { ...DNS, 'rebound.test': [v4('169.254.169.254')], 'elsewhere.test': [v4('127.0.0.1')] },
    });
  });
  afterAll(async () => {
    await p.close();
    await upstream.close();
  });
  afterEach(() => {
    upstream.seen.length = 0;
    p.asked.length = 0;
  });

  it.each([
    {
      note: 'an allowed name outside the range: resolved, allowed, forwarded',
      host: 'allowed.test',
      status: 200,
      rule: 'named-upstream',
      asked: ['allowed.test'],
    },
    {
      note: 'a name no rule could allow: denied before DNS, never looked up',
      host: 'elsewhere.test',
      status: 403,
      rule: null,
      asked: [],
    },
  ])('$note', async ({ host, status, rule, asked }) => {
    const res = await get(p, `http://${host}:${upstream.port}/x`);
    expect(res.status).toBe(status);
    expect(p.enforcer.last().verdict.decision.rule).toBe(rule);
    expect(p.asked).toEqual(asked);
    expect(upstream.seen).toHaveLength(status === 200 ? 1 : 0);
  });

  it('an address inside the range is denied by the range rule once it is known', async () => {
    const policy = policyFrom(`
agent: ${AGENT}
rules:
  - { name: no-metadata, action: network, conditions: { address: { in_cidr: ["169.254.0.0/16"] } }, effect: DENY }
  - { name: web, action: network, conditions: { url: { starts_with: "http://rebound.test" } }, effect: ALLOW }
`);
    const action = { type: 'network', url: 'http://rebound.test/', method: 'GET' };
    expect(policy.evaluate(action, {}, { addressesPending: true }).rule).toBe('web');
    expect(policy.evaluate(action, { addresses: ['169.254.169.254'] })).toMatchObject({
      effect: 'DENY',
      rule: 'no-metadata',
    });
  });
});

// A carve-out: a DENY on one host inside an allowed range. A DNS answer that mixes the denied address with an
// allowed one must not get through: the pin would be the first address, the denied one.
describe('a DENY range inside an allowed range, against a mixed DNS answer', () => {
  let secret: Upstream;
  let p: ProxyUnderTest;
  beforeAll(async () => {
    secret = await startUpstream(undefined, '127.0.0.2');
    p = await startProxy({
      policy: `
agent: ${AGENT}
rules:
  - name: no-secrets-host
    action: network
    conditions:
      address: { in_cidr: ["127.0.0.2/32"] }
    effect: DENY
  - name: internal
    action: network
    conditions:
      url: { starts_with: "http://mixed.test:${secret.port}" }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
`,
      dns: { 'mixed.test': [v4('127.0.0.2'), v4('127.0.0.1')] },
    });
  });
  afterAll(async () => {
    await p.close();
    await secret.close();
  });

  it('is denied by the carve-out and never reaches the denied address', async () => {
    const res = await get(p, `http://mixed.test:${secret.port}/`);
    expect(res.status).toBe(403);
    expect(p.enforcer.last().verdict.decision).toEqual({
      effect: 'DENY',
      rule: 'no-secrets-host',
      reason: 'matched',
    });
    expect(secret.seen).toHaveLength(0);
  });
});

describe('limits and upstream failures', () => {
  const MAX = 1024;
  const handlers: Record<string, UpstreamHandler> = {
    '/ok': (_req, _body, res) => res.end('ok'),
    '/slow': () => {},
    '/reset': (req) => req.socket.destroy(),
    '/stall': (_req, _body, res) => {
      res.writeHead(200, { 'content-length': 100 });
      res.write('first bytes');
    },
  };
  let upstream: Upstream;
  let p: ProxyUnderTest;
  beforeAll(async () => {
    upstream = await startUpstream((req, body, res) => {
      const handler = handlers[req.url ?? ''] ?? handlers['/ok']!;
      handler(req, body, res);
    });
    p = await startProxy({
      policy: policyFor(upstream.port),
      dns: DNS,
      limits: { maxBodyBytes: MAX, upstreamHeadersTimeoutMs: 200, upstreamBodyTimeoutMs: 200 },
    });
  });
  afterAll(async () => {
    await p.close();
    await upstream.close();
  });

  const ok = async () => {
    const res = await get(p, `http://allowed.test:${upstream.port}/ok`);
    expect(res.status).toBe(200);
    expect(res.body).toBe('ok');
  };

  it.each([
    { note: 'exactly the limit', body: () => Buffer.alloc(MAX, 'a'), status: 200, hit: true },
    {
      note: 'Content-Length over the limit, refused upfront',
      body: () => Buffer.alloc(MAX + 1, 'a'),
      status: 413,
      hit: false,
    },
    {
      note: 'chunked body that grows past the limit',
      body: () =>
        Readable.from([Buffer.alloc(MAX / 2, 'a'), Buffer.alloc(MAX / 2, 'b'), Buffer.alloc(64, 'c')]),
      status: 413,
      hit: false,
    },
  ])('request body: $note -> $status', async ({ body, status, hit }) => {
    upstream.seen.length = 0;
    const res = await get(p, `http://allowed.test:${upstream.port}/ok`, { method: 'POST', body: body() });
    expect(res.status).toBe(status);
    if (status === 413) expect(errorOf(res.body).code).toBe('SIDECAR_ERR_REQUEST_TOO_LARGE');
    // A cut upload never completes at the upstream, so it never records it.
    expect(upstream.seen.length > 0).toBe(hit);
    await ok();
  });

  it.each([
    {
      note: 'upstream down',
      path: '/ok',
      down: true,
      status: 502,
      code: 'SIDECAR_ERR_UPSTREAM_UNREACHABLE',
      kind: 'unreachable',
    },
    {
      note: 'upstream slow past the headers timeout',
      path: '/slow',
      down: false,
      status: 504,
      code: 'SIDECAR_ERR_UPSTREAM_TIMEOUT',
      kind: 'timeout',
    },
    {
      note: 'upstream resets the connection',
      path: '/reset',
      down: false,
      status: 502,
      code: 'SIDECAR_ERR_UPSTREAM_UNREACHABLE',
      kind: 'unreachable',
    },
  ])('$note -> $status, counted, and the proxy keeps serving', async ({ path, down, status, code, kind }) => {
    const port = down ? await closedPort() : upstream.port;
    const q = down ? await startProxy({ policy: policyFor(port), dns: DNS }) : p;
    try {
      const before =
        (await q.metrics.upstreamErrors.get()).values.find((v) => v.labels.kind === kind)?.value ?? 0;
      const res = await get(q, `http://allowed.test:${port}${path}`);
      expect(res.status).toBe(status);
      const err = errorOf(res.body);
      expect(err.code).toBe(code);
      // An upstream failure is reported under the decision that let the request out.
      expect(err.decision_id).toBe(q.enforcer.last().verdict.decisionId);
      expect(q.enforcer.last().verdict.effect).toBe('ALLOW');
      const after =
        (await q.metrics.upstreamErrors.get()).values.find((v) => v.labels.kind === kind)?.value ?? 0;
      expect(after).toBe(before + 1);
    } finally {
      if (q !== p) await q.close();
    }
    await ok();
  });

  it('a response that stalls mid-body is cut, not completed or replaced', async () => {
    const res = await request(`http://allowed.test:${upstream.port}/stall`, { dispatcher: p.agent });
    expect(res.statusCode).toBe(200);
    await expect(res.body.text()).rejects.toThrow();
    await ok();
    const line = p.logs
      .filter((l) => l['msg'] === 'decision')
      .find((l) => l['upstream_error'] === 'UND_ERR_BODY_TIMEOUT');
    expect(line).toMatchObject({ status: 200, reason: 'upstream_error', effect: 'ALLOW' });
  });

  it('rejects limits that are not positive integers', async () => {
    await expect(startProxy({ policy: policyFor(1), limits: { maxTunnels: 0 } })).rejects.toThrow(
      /maxTunnels/,
    );
  });
});

describe('an agent that leaves', () => {
  let upstream: Upstream;
  let p: ProxyUnderTest;
  let upstreamClosed = 0;
  beforeAll(async () => {
    upstream = await startUpstream((req, _body, res) => {
      // Headers and a first chunk of a longer body, then nothing: only the proxy can end this exchange.
      if (req.url === '/partial') {
        res.writeHead(200, { 'content-length': 100 });
        res.write('first bytes');
      }
    });
    upstream.server.on('connection', (socket) => socket.on('close', () => upstreamClosed++));
    p = await startProxy({ policy: policyFor(upstream.port), dns: DNS });
  });
  afterAll(async () => {
    await p.close();
    await upstream.close();
  });

  /** Sends an absolute-form GET on a raw socket; resolves once `ready` says so, then drops the connection. */
  async function leaveWhen(path: string, ready: (received: string) => boolean): Promise<void> {
    const socket = connect(p.port, '127.0.0.1');
    socket.on('error', () => {});
    await once(socket, 'connect');
    let received = '';
    socket.on('data', (c: Buffer) => {
      received += c.toString('latin1');
    });
    socket.write(`GET http://allowed.test:${upstream.port}${path} HTTP/1.1\r\nhost: allowed.test\r\n\r\n`);
    await until(() => ready(received));
    socket.destroy();
  }

  it.each([
    {
      note: 'mid-response: the upstream connection is cut, the line keeps the status',
      path: '/partial',
      ready: (received: string) => received.includes('first bytes'),
      status: 200,
    },
    {
      note: 'while the upstream has not answered: the upstream connection is cut, status 0',
      path: '/silent',
      ready: () => upstream.seen.some((r) => r.url === '/silent'),
      status: 0,
    },
  ])('$note', async ({ path, ready, status }) => {
    const closedBefore = upstreamClosed;
    const linesBefore = p.logs.length;
    await leaveWhen(path, ready);
    await until(() => upstreamClosed > closedBefore);
    await until(() => p.logs.length > linesBefore);
    expect(p.logs.slice(linesBefore)).toEqual([
      expect.objectContaining({
        msg: 'decision',
        status,
        reason: 'client_gone',
        effect: 'ALLOW',
        decision_id: p.enforcer.last().verdict.decisionId,
      }),
    ]);
    expect(p.proxy.activeTunnels()).toBe(0);
  });
});

describe('https absolute-form', () => {
  it('dispatches TLS to the pinned address; a plain-HTTP upstream fails the handshake -> 502', async () => {
    const upstream = await startUpstream();
    const p = await startProxy({
      policy: `
agent: ${AGENT}
rules:
  - name: tls-upstream
    action: network
    conditions:
      url: { starts_with: "https://allowed.test:${upstream.port}" }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
`,
      dns: DNS,
    });
    try {
      const res = await rawProxyRequest(p.port, `https://allowed.test:${upstream.port}/secure`);
      expect(res.status).toBe(502);
      expect(p.enforcer.last().verdict.effect).toBe('ALLOW');
      expect(upstream.seen).toHaveLength(0);
    } finally {
      await p.close();
      await upstream.close();
    }
  });
});

describe('close()', () => {
  it('cuts requests still in flight, then refuses new ones', async () => {
    const upstream = await startUpstream(() => {});
    const p = await startProxy({ policy: policyFor(upstream.port), dns: DNS });
    try {
      const pending = request(`http://allowed.test:${upstream.port}/hang`, { dispatcher: p.agent });
      // Wait until the request is out, so close() has something to cut.
      while ((await countConnections(upstream)) === 0) await tick();
      await p.proxy.close();
      await expect(pending.then((r) => r.body.text())).rejects.toThrow();
      const res = await rawProxyRequest(p.port, `http://allowed.test:${upstream.port}/after`);
      expect(res.status).toBe(503);
    } finally {
      await p.close();
      await upstream.close();
    }
  });
});

function countConnections(upstream: Upstream): Promise<number> {
  return new Promise((resolve) => upstream.server.getConnections((_err, n) => resolve(n)));
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

async function until(condition: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}
