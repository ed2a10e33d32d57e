// The helpdesk agent's own edges: its chat endpoint's input checks, and the reach attempts of the compromised mode,
// against servers on loopback only.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dnsQuery, httpReach, tcpReach } from '../../../agents/helpdesk-agent/reach.ts';
import { type AgentServer, startAgentServer } from '../../../agents/helpdesk-agent/server.ts';

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

/** A port nothing listens on: bound once, then closed. */
async function closedPort(): Promise<number> {
  const s = createServer();
  const port = await listen(s);
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

describe('POST /chat input', () => {
  let agent: AgentServer;
  let deadSidecar: string;

  beforeAll(async () => {
    deadSidecar = `http://127.0.0.1:${await closedPort()}`;
    agent = await startAgentServer({
      mcpUrl: `${deadSidecar}/mcp`,
      anthropicBaseUrl: `${deadSidecar}/anthropic`,
      model: 'claude-haiku-4-5',
    });
  });
  afterAll(async () => {
    await agent?.close();
  });

  const chat = async (body: unknown, token: string | null = 'a.b.c', type = 'application/json') => {
    const res = await fetch(`${agent.url}/chat`, {
      method: 'POST',
      headers: { 'content-type': type, ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
    return { status: res.status, json: (await res.json()) as { error?: { code: string } } };
  };

  it.each([
    ['no token', { message: 'hi' }, null, 401, 'unauthenticated'],
    ['no message', {}, 'a.b.c', 400, 'malformed'],
    ['an unknown member', { message: 'hi', role: 'admin' }, 'a.b.c', 400, 'malformed'],
    ['inject not a boolean', { message: 'hi', inject: 'yes' }, 'a.b.c', 400, 'malformed'],
    [
      'a target without a port',
      { inject: true, targets: [{ label: 'x', host: '10.0.0.1' }] },
      'a.b.c',
      400,
      'malformed',
    ],
    ['a message too long', { message: 'x'.repeat(4001) }, 'a.b.c', 400, 'malformed'],
    ['not JSON', '{', 'a.b.c', 400, 'malformed'],
  ] as const)('refuses %s', async (_name, body, token, status, code) => {
    const r = await chat(body, token);
    expect(r.status).toBe(status);
    expect(r.json.error?.code).toBe(code);
  });

  it('refuses another content type, and answers health and unknown routes', async () => {
    expect((await chat('message=hi', 'a.b.c', 'application/x-www-form-urlencoded')).status).toBe(415);
    expect((await fetch(`${agent.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${agent.url}/admin`)).status).toBe(404);
  });

  it('says the sidecar is unreachable instead of failing opaquely', async () => {
    const r = await chat({ message: 'hi' });
    expect(r.status).toBe(502);
    expect(r.json.error?.code).toBe('sidecar_unreachable');
  });
});

describe('reach attempts', () => {
  let server: Server;
  let port: number;

  beforeAll(async () => {
    server = createServer((req, res) => {
      const decision = '11111111-2222-3333-4444-555555555555';
      // Asked directly (origin-form) or as the agent's proxy (absolute-form): the same answers.
      const path = (req.url ?? '').replace(/^http:\/\/[^/]+/, '');
      if (path === '/refused') {
        const body = JSON.stringify({ error: { code: 'SIDECAR_ERR_POLICY_DENIED', decision_id: decision } });
        res
          .writeHead(403, { 'content-type': 'application/json', 'x-sidecar-decision-id': decision })
          .end(body);
      } else if (path === '/upstream-error') {
        // An upstream's own error body that happens to use a sidecar code: not a sidecar refusal.
        const body = JSON.stringify({ error: { code: 'SIDECAR_ERR_NOT_FOUND' } });
        res
          .writeHead(404, { 'content-type': 'application/json', 'x-sidecar-decision-id': decision })
          .end(body);
      } else {
        res.writeHead(200).end('ok');
      }
    });
    port = await listen(server);
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it('TCP: reached when it connects, the error code when refused', async () => {
    expect(await tcpReach('127.0.0.1', port)).toMatchObject({ reached: true });
    expect(await tcpReach('127.0.0.1', await closedPort())).toMatchObject({
      reached: false,
      detail: 'ECONNREFUSED',
    });
  });

  it('HTTP through the proxy: a sidecar refusal is blocked with its code and decision id; anything else got through', async () => {
    const saved = process.env['HTTP_PROXY'];
    process.env['HTTP_PROXY'] = `http://127.0.0.1:${port}`;
    try {
      // A timeout of its own gives this case a proxy dispatcher built with the HTTP_PROXY set above.
      const viaProxy = (path: string) => httpReach(`http://target.invalid${path}`, 'proxy', 4_321);
      expect(await viaProxy('/refused')).toEqual({
        reached: false,
        detail: 'HTTP 403 SIDECAR_ERR_POLICY_DENIED',
        decision_id: '11111111-2222-3333-4444-555555555555',
      });
      expect(await viaProxy('/upstream-error')).toMatchObject({ reached: true, detail: 'HTTP 404' });
      expect(await viaProxy('/')).toMatchObject({ reached: true, detail: 'HTTP 200' });
    } finally {
      if (saved === undefined) delete process.env['HTTP_PROXY'];
      else process.env['HTTP_PROXY'] = saved;
    }
  });

  it('HTTP direct: any answer means the attempt got out, whatever its body says', async () => {
    for (const path of ['/refused', '/upstream-error', '/']) {
      expect(await httpReach(`http://127.0.0.1:${port}${path}`, 'direct'), path).toMatchObject({
        reached: true,
      });
    }
  });

  it('builds a well-formed DNS query', () => {
    const q = dnsQuery('example.com', 0x1234);
    expect(q.subarray(0, 12)).toEqual(Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]));
    expect(q.subarray(12).toString('latin1')).toBe('\x07example\x03com\x00\x00\x01\x00\x01');
  });
});
