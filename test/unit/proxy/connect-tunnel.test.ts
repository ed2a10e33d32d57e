// CONNECT tunnels through the proxy: authority parsing, origin-level decisions, splicing to a loopback echo or
// HTTP server, and the limits that end tunnels (count, idle, upstream down, shutdown).
import { once } from 'node:events';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConnectTarget } from '../../../sidecar/proxy/connect-tunnel.ts';
import {
  closedPort,
  type ProxyUnderTest,
  rawConnect,
  roundTrip,
  startEcho,
  startProxy,
  startUpstream,
  type Upstream,
  v4,
} from './support.ts';

describe('parseConnectTarget', () => {
  it.each([
    { raw: 'example.com:443', want: { host: 'example.com', port: 443, url: 'https://example.com:443' } },
    { raw: 'EXAMPLE.com.:8443', want: { host: 'example.com', port: 8443, url: 'https://example.com:8443' } },
    { raw: '127.0.0.1:80', want: { host: '127.0.0.1', port: 80, url: 'https://127.0.0.1:80' } },
    { raw: '0x7f.1:80', want: { host: '127.0.0.1', port: 80, url: 'https://127.0.0.1:80' } },
    { raw: '[::1]:443', want: { host: '[::1]', port: 443, url: 'https://[::1]:443' } },
    {
      raw: '[::ffff:127.0.0.1]:443',
      want: { host: '[::ffff:7f00:1]', port: 443, url: 'https://[::ffff:7f00:1]:443' },
    },
  ])('$raw', ({ raw, want }) => {
    expect(parseConnectTarget(raw)).toEqual(want);
  });

  it.each([
    { note: 'no port', raw: 'example.com' },
    { note: 'port 0', raw: 'example.com:0' },
    { note: 'port out of range', raw: 'example.com:65536' },
    { note: 'userinfo', raw: 'user@example.com:443' },
    { note: 'a path', raw: 'example.com:443/path' },
    { note: 'absolute URL', raw: 'https://example.com:443' },
    { note: 'origin-form', raw: '/path' },
    { note: 'unbracketed IPv6', raw: '::1:443' },
    { note: 'IPv4 out of range', raw: '256.1.1.1:443' },
    { note: 'empty', raw: '' },
    { note: 'undefined', raw: undefined },
  ])('refuses $note', ({ raw }) => {
    expect(parseConnectTarget(raw)).toBeNull();
  });
});

const tunnelPolicy = (ports: { echo: number; http: number }) => `
agent: tunnel-test
rules:
  - name: echo-origin
    action: network
    conditions:
      url: { starts_with: "https://127.0.0.1:${ports.echo}" }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
  - name: named-echo
    action: network
    conditions:
      url: { starts_with: "https://echo.test:${ports.echo}" }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
  - name: http-origin
    action: network
    conditions:
      url: { starts_with: "https://127.0.0.1:${ports.http}" }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
`;

describe('tunnels', () => {
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let http: Upstream;
  let p: ProxyUnderTest;
  beforeAll(async () => {
    echo = await startEcho();
    http = await startUpstream();
    p = await startProxy({
      policy: tunnelPolicy({ echo: echo.port, http: http.port }),
      dns: { 'echo.test': [v4('127.0.0.1')] },
    });
  });
  afterAll(async () => {
    await p.close();
    await echo.close();
    await http.close();
  });

  it('ProxyAgent with proxyTunnel carries HTTP through CONNECT; the decision is at origin level', async () => {
    const res = await request(`http://127.0.0.1:${http.port}/inside/the/tunnel?x=1`, {
      dispatcher: p.tunnelAgent,
    });
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe('hello from upstream');
    expect(http.seen.at(-1)?.url).toBe('/inside/the/tunnel?x=1');
    const call = p.enforcer.calls.find(
      (c) => (c.request.action as { url: string }).url === `https://127.0.0.1:${http.port}`,
    );
    expect(call?.request.action).toEqual({
      type: 'network',
      url: `https://127.0.0.1:${http.port}`,
      method: 'CONNECT',
    });
    expect(call?.verdict.effect).toBe('ALLOW');
    expect(call?.request.trusted?.addresses).toEqual(['127.0.0.1']);
  });

  it.each([
    { note: 'IP literal', target: () => `127.0.0.1:${echo.port}`, asked: [] as string[] },
    { note: 'name resolved once by the guard', target: () => `echo.test:${echo.port}`, asked: ['echo.test'] },
  ])('a raw CONNECT to an echo server ($note) is transparent both ways', async ({ target, asked }) => {
    const lookups = p.asked.length;
    // The tunnelled ProxyAgent above keeps its tunnel alive: count relative to what is already open.
    const open = p.proxy.activeTunnels();
    const t = await rawConnect(p.port, target());
    expect(t.status).toBe(200);
    expect(t.headers['x-sidecar-decision-id']).toBe(p.enforcer.last().verdict.decisionId);
    expect(p.asked.slice(lookups)).toEqual(asked);
    expect(p.proxy.activeTunnels()).toBe(open + 1);
    expect(await roundTrip(t.socket, 'ping through the tunnel')).toBe('ping through the tunnel');
    const closed = once(t.socket, 'close');
    t.socket.end();
    await closed;
    while (p.proxy.activeTunnels() > open) await tick();
    const line = p.logs.filter((l) => l['method'] === 'CONNECT').at(-1);
    expect(line).toMatchObject({
      msg: 'decision',
      status: 200,
      effect: 'ALLOW',
      bytes_in: 'ping through the tunnel'.length,
      bytes_out: 'ping through the tunnel'.length,
    });
    expect((await p.metrics.tunnels.get()).values[0]?.value).toBe(open);
  });

  it('forwards bytes the agent sent together with the CONNECT head', async () => {
    const { connect } = await import('node:net');
    const socket = connect(p.port, '127.0.0.1');
    await once(socket, 'connect');
    socket.write(`CONNECT 127.0.0.1:${echo.port} HTTP/1.1\r\nhost: x\r\n\r\nearly bytes`);
    let got = '';
    for await (const chunk of socket as AsyncIterable<Buffer>) {
      got += chunk.toString('utf8');
      if (got.endsWith('early bytes')) break;
    }
    expect(got.startsWith('HTTP/1.1 200')).toBe(true);
    expect(got.endsWith('\r\n\r\nearly bytes')).toBe(true);
  });

  it.each([
    { note: 'a port the policy does not allow', target: () => `127.0.0.1:${echo.port + 1}`, status: 403 },
    { note: 'a host the policy does not allow', target: () => `other.test:${echo.port}`, status: 403 },
    { note: 'a target that does not parse', target: () => 'no-port-here', status: 400 },
    { note: 'userinfo in the authority', target: () => `user@127.0.0.1:${echo.port}`, status: 400 },
  ])(
    'refuses $note -> $status with the decision id, audited, nothing looked up',
    async ({ target, status }) => {
      const lookups = p.asked.length;
      const connections = echo.connections();
      const t = await rawConnect(p.port, target());
      expect(t.status).toBe(status);
      const body = JSON.parse(t.body) as { error: { code: string; decision_id: string } };
      expect(body.error.decision_id).toBe(p.enforcer.last().verdict.decisionId);
      expect(t.headers['x-sidecar-decision-id']).toBe(body.error.decision_id);
      expect(p.enforcer.last().verdict.effect).toBe('DENY');
      expect(p.asked.length).toBe(lookups);
      expect(echo.connections()).toBe(connections);
      t.socket.destroy();
    },
  );
});

describe('tunnel limits', () => {
  it('refuses tunnels over maxTunnels with 503 and accepts again once one closes', async () => {
    const echo = await startEcho();
    const p = await startProxy({
      policy: tunnelPolicy({ echo: echo.port, http: 1 }),
      limits: { maxTunnels: 2 },
    });
    try {
      const a = await rawConnect(p.port, `127.0.0.1:${echo.port}`);
      const b = await rawConnect(p.port, `127.0.0.1:${echo.port}`);
      expect([a.status, b.status]).toEqual([200, 200]);
      const c = await rawConnect(p.port, `127.0.0.1:${echo.port}`);
      expect(c.status).toBe(503);
      expect(JSON.parse(c.body)).toMatchObject({ error: { code: 'SIDECAR_ERR_TUNNEL_LIMIT' } });
      // Refused on the count alone: nothing was decided or audited for it.
      expect(p.enforcer.calls).toHaveLength(2);
      expect(await roundTrip(b.socket, 'still open')).toBe('still open');

      a.socket.destroy();
      while (p.proxy.activeTunnels() > 1) await tick();
      const d = await rawConnect(p.port, `127.0.0.1:${echo.port}`);
      expect(d.status).toBe(200);
      expect(await roundTrip(d.socket, 'new tunnel')).toBe('new tunnel');
      for (const t of [b, c, d]) t.socket.destroy();
    } finally {
      await p.close();
      await echo.close();
    }
  });

  it('lets go of a refused CONNECT socket once the agent hangs up', async () => {
    const echo = await startEcho();
    const p = await startProxy({ policy: tunnelPolicy({ echo: echo.port, http: 1 }) });
    try {
      const t = await rawConnect(p.port, `127.0.0.1:${echo.port + 1}`);
      expect(t.status).toBe(403);
      t.socket.end();
      await once(t.socket, 'close');
      while ((await p.connections()) > 0) await tick();
      expect(p.proxy.activeTunnels()).toBe(0);
    } finally {
      await p.close();
      await echo.close();
    }
  });

  it('closes a tunnel that stays idle past tunnelIdleTimeoutMs', async () => {
    const echo = await startEcho();
    const p = await startProxy({
      policy: tunnelPolicy({ echo: echo.port, http: 1 }),
      limits: { tunnelIdleTimeoutMs: 100 },
    });
    try {
      const t = await rawConnect(p.port, `127.0.0.1:${echo.port}`);
      expect(t.status).toBe(200);
      t.socket.resume();
      await once(t.socket, 'close');
      while (p.proxy.activeTunnels() > 0) await tick();
      expect(p.logs.filter((l) => l['method'] === 'CONNECT').at(-1)).toMatchObject({
        reason: 'idle_timeout',
      });
    } finally {
      await p.close();
      await echo.close();
    }
  });

  it('answers 502 when the allowed upstream is down, and keeps serving', async () => {
    const echo = await startEcho();
    const down = await closedPort();
    const p = await startProxy({ policy: tunnelPolicy({ echo: echo.port, http: down }) });
    try {
      const t = await rawConnect(p.port, `127.0.0.1:${down}`);
      expect(t.status).toBe(502);
      const body = JSON.parse(t.body) as { error: { code: string; decision_id: string } };
      expect(body.error.code).toBe('SIDECAR_ERR_UPSTREAM_UNREACHABLE');
      expect(body.error.decision_id).toBe(p.enforcer.last().verdict.decisionId);
      const errors = await p.metrics.upstreamErrors.get();
      expect(errors.values.find((v) => v.labels.kind === 'unreachable')?.value).toBe(1);
      const ok = await rawConnect(p.port, `127.0.0.1:${echo.port}`);
      expect(await roundTrip(ok.socket, 'after')).toBe('after');
      ok.socket.destroy();
    } finally {
      await p.close();
      await echo.close();
    }
  });

  it('close() destroys open tunnels and refuses new ones', async () => {
    const echo = await startEcho();
    const p = await startProxy({ policy: tunnelPolicy({ echo: echo.port, http: 1 }) });
    try {
      const t = await rawConnect(p.port, `127.0.0.1:${echo.port}`);
      expect(t.status).toBe(200);
      t.socket.resume();
      const closed = once(t.socket, 'close');
      await p.proxy.close();
      await closed;
      expect(p.proxy.activeTunnels()).toBe(0);
      const late = await rawConnect(p.port, `127.0.0.1:${echo.port}`);
      expect(late.status).toBe(503);
    } finally {
      await p.close();
      await echo.close();
    }
  });
});

const tick = () => new Promise((resolve) => setImmediate(resolve));
