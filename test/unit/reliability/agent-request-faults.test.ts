// Hostile or broken requests from the agent side, over raw sockets: oversized bodies, malformed request lines,
// pipelining, header floods, half-closed sockets and slowloris clients. Each case checks the answer the agent gets
// (a uniform JSON error with a registry code, never a stack trace), whether an upstream was hit, that the sidecar
// keeps serving, and that the audit chain verifies.
import { afterEach, describe, expect, it } from 'vitest';
import {
  auditEntries,
  errorCodeOf,
  rawExchange,
  splitResponses,
  stillServing,
  useSidecarAndUpstream,
  verifyChain,
} from './harness.ts';

const HEADERS_TIMEOUT_MS = 500;
const MAX_HEADER_SIZE = 4096;
const MAX_PROXY_BODY = 4096;
const MAX_EVALUATE_BODY = 64 * 1024;

const ctx = useSidecarAndUpstream({
  listenerLimits: {
    maxHeaderSize: MAX_HEADER_SIZE,
    headersTimeoutMs: HEADERS_TIMEOUT_MS,
    requestTimeoutMs: 1500,
    keepAliveTimeoutMs: 1000,
  },
  proxyLimits: { maxBodyBytes: MAX_PROXY_BODY },
});
afterEach(async () => {
  expect(await stillServing(ctx.s.url)).toBe(true);
  expect((await verifyChain(ctx.s.auditPath)).ok).toBe(true);
});

const evaluateHead = (length: number | 'chunked', extra = '') =>
  `POST /v1/evaluate HTTP/1.1\r\nhost: sidecar\r\ncontent-type: application/json\r\n${
    length === 'chunked' ? 'transfer-encoding: chunked' : `content-length: ${length}`
  }\r\n${extra}\r\n`;
const firstResponse = (text: string) => splitResponses(text)[0];
const looksClean = (text: string) => expect(text).not.toMatch(/\n\s+at |\.ts:\d+|node:internal|Error:/);
const complete = (t: string) => splitResponses(t).length > 0;

describe('oversized bodies', () => {
  it('/v1/evaluate with a declared length over 64 KiB: 413 before the body is read, nothing audited', async () => {
    const before = (await auditEntries(ctx.s.auditPath)).length;
    const out = await rawExchange(ctx.s.port, [evaluateHead(MAX_EVALUATE_BODY + 1)], { stopWhen: complete });
    const res = firstResponse(out.text);
    expect(res?.status).toBe(413);
    expect(errorCodeOf(res?.body ?? '')).toBe('SIDECAR_ERR_REQUEST_TOO_LARGE');
    expect((await auditEntries(ctx.s.auditPath)).length).toBe(before);
  });

  it('/v1/evaluate with a chunked body that grows past 64 KiB: 413, no decision made', async () => {
    const before = (await auditEntries(ctx.s.auditPath)).length;
    const chunk = `4000\r\n${'a'.repeat(0x4000)}\r\n`;
    const out = await rawExchange(ctx.s.port, [evaluateHead('chunked'), ...Array(6).fill(chunk)], {
      stopWhen: complete,
    });
    expect(firstResponse(out.text)?.status).toBe(413);
    expect((await auditEntries(ctx.s.auditPath)).length).toBe(before);
  });

  it('proxied request with a declared length over the proxy limit: 413, the upstream is never hit', async () => {
    const hits = ctx.up.hits;
    const head = `POST http://127.0.0.1:${ctx.up.port}/upload HTTP/1.1\r\nhost: 127.0.0.1:${ctx.up.port}\r\ncontent-length: ${MAX_PROXY_BODY + 1}\r\n\r\n`;
    const out = await rawExchange(ctx.s.port, [head], { stopWhen: complete });
    const res = firstResponse(out.text);
    expect(res?.status).toBe(413);
    expect(errorCodeOf(res?.body ?? '')).toBe('SIDECAR_ERR_REQUEST_TOO_LARGE');
    expect(ctx.up.hits).toBe(hits);
  });

  it('proxied chunked body that grows past the limit: 413, and the upstream never gets a complete body', async () => {
    const head = `POST http://127.0.0.1:${ctx.up.port}/upload HTTP/1.1\r\nhost: 127.0.0.1:${ctx.up.port}\r\ntransfer-encoding: chunked\r\n\r\n`;
    const chunk = `400\r\n${'b'.repeat(0x400)}\r\n`;
    const out = await rawExchange(ctx.s.port, [head, ...Array(8).fill(chunk), '0\r\n\r\n'], {
      stopWhen: complete,
    });
    const res = firstResponse(out.text);
    // The head may already be upstream (the body streams); what must not happen is a relayed upstream answer.
    expect(res?.status).toBe(413);
    expect(errorCodeOf(res?.body ?? '')).toBe('SIDECAR_ERR_REQUEST_TOO_LARGE');
  });
});

describe('malformed request lines', () => {
  it.each([
    ['garbage', 'GARBAGE\r\n\r\n'],
    ['unknown version', 'GET /healthz HTTP/9.9\r\n\r\n'],
    ['NUL in the target', 'GET /health\u0000z HTTP/1.1\r\nhost: x\r\n\r\n'],
    ['space in the target', 'GET /a b HTTP/1.1\r\nhost: x\r\n\r\n'],
    ['bare LF line endings mixed with CR', 'GET / HTTP/1.1\rhost: x\r\n\r\n'],
    [
      'binary noise',
      Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a]),
    ],
    ['header without a colon', 'GET /healthz HTTP/1.1\r\nhost x\r\n\r\n'],
    ['conflicting framing (CL + TE)', `${evaluateHead(5, 'transfer-encoding: chunked\r\n')}0\r\n\r\n`],
    ['negative content-length', evaluateHead(-1)],
  ])('%s: 400 REQUEST_MALFORMED, then the connection closes', async (_name, bytes) => {
    const out = await rawExchange(ctx.s.port, [bytes], { deadlineMs: 3000 });
    const res = firstResponse(out.text);
    expect(res?.status).toBe(400);
    expect(errorCodeOf(res?.body ?? '')).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
    expect(out.closed).toBe(true);
    looksClean(out.text);
  });

  it('an absolute-form target the proxy cannot parse: 400, audited as a malformed DENY', async () => {
    const out = await rawExchange(
      ctx.s.port,
      ['GET http://user:pw@127.0.0.1:1/ HTTP/1.1\r\nhost: x\r\n\r\n'],
      {
        stopWhen: complete,
      },
    );
    const res = firstResponse(out.text);
    expect(res?.status).toBe(400);
    const id = res?.headers['x-sidecar-decision-id'];
    const entry = (await auditEntries(ctx.s.auditPath)).find((e) => e.decision_id === id);
    expect(entry).toMatchObject({ effect: 'DENY', reason: 'malformed_action' });
  });
});

describe('pipelining', () => {
  it('answers pipelined requests in order on one connection, each decision audited', async () => {
    const allow = '{"type":"file_read","path":"/data/a"}';
    const deny = '{"type":"file_read","path":"/etc/shadow"}';
    const requests = [
      'GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n',
      `${evaluateHead(allow.length)}${allow}`,
      `GET http://127.0.0.1:${ctx.up.port}/p HTTP/1.1\r\nhost: 127.0.0.1:${ctx.up.port}\r\n\r\n`,
      `${evaluateHead(deny.length)}${deny}`,
      'GET /nope HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n',
    ];
    const out = await rawExchange(ctx.s.port, [requests.join('')], { deadlineMs: 3000 });
    const responses = splitResponses(out.text);
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200, 200, 404]);
    expect(JSON.parse(responses[1]?.body ?? '{}')).toMatchObject({ effect: 'ALLOW' });
    expect(responses[2]?.body).toBe('hello from upstream');
    expect(JSON.parse(responses[3]?.body ?? '{}')).toMatchObject({ effect: 'DENY' });
    const ids = [1, 2, 3].map((i) => responses[i]?.headers['x-sidecar-decision-id']);
    const audited = new Set((await auditEntries(ctx.s.auditPath)).map((e) => e.decision_id));
    for (const id of ids) expect(audited.has(id as string)).toBe(true);
  });

  it('a malformed request in the middle of a pipeline ends the connection after the good ones', async () => {
    const out = await rawExchange(
      ctx.s.port,
      ['GET /healthz HTTP/1.1\r\nhost: x\r\n\r\nBROKEN LINE\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n'],
      { deadlineMs: 3000 },
    );
    expect(splitResponses(out.text).map((r) => r.status)).toEqual([200, 400]);
    expect(out.closed).toBe(true);
  });

  it('a hundred pipelined evaluations on one socket all come back, in order', async () => {
    const body = (i: number) => `{"type":"file_read","path":"/data/${i}"}`;
    const batch = Array.from({ length: 100 }, (_, i) => `${evaluateHead(body(i).length)}${body(i)}`).join('');
    const out = await rawExchange(ctx.s.port, [batch], {
      deadlineMs: 5000,
      stopWhen: (t) => splitResponses(t).length === 100,
    });
    const responses = splitResponses(out.text);
    expect(responses).toHaveLength(100);
    expect(responses.every((r) => r.status === 200 && JSON.parse(r.body).effect === 'ALLOW')).toBe(true);
  });
});

describe('header floods', () => {
  it('one header larger than maxHeaderSize: 431 HEADERS_TOO_LARGE', async () => {
    const out = await rawExchange(ctx.s.port, [
      `GET /healthz HTTP/1.1\r\nx-big: ${'a'.repeat(MAX_HEADER_SIZE)}\r\n\r\n`,
    ]);
    const res = firstResponse(out.text);
    expect(res?.status).toBe(431);
    expect(errorCodeOf(res?.body ?? '')).toBe('SIDECAR_ERR_HEADERS_TOO_LARGE');
    expect(out.closed).toBe(true);
  });

  it('thousands of small headers: 431, the upstream never hit', async () => {
    const hits = ctx.up.hits;
    const many = Array.from({ length: 3000 }, (_, i) => `x-${i}: 1\r\n`).join('');
    const out = await rawExchange(ctx.s.port, [
      `GET http://127.0.0.1:${ctx.up.port}/flood HTTP/1.1\r\nhost: 127.0.0.1:${ctx.up.port}\r\n${many}\r\n`,
    ]);
    expect(firstResponse(out.text)?.status).toBe(431);
    expect(ctx.up.hits).toBe(hits);
  });

  it('headers sent as endless continuation bytes without a line end: 431 once the limit is crossed', async () => {
    const out = await rawExchange(ctx.s.port, [
      'GET /healthz HTTP/1.1\r\nx-a: ',
      ...Array(10).fill('b'.repeat(1024)),
    ]);
    expect(firstResponse(out.text)?.status).toBe(431);
  });
});

describe('half-closed sockets', () => {
  it('FIN right after a complete GET: the response still arrives', async () => {
    const out = await rawExchange(ctx.s.port, ['GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n'], {
      endAfter: true,
    });
    expect(firstResponse(out.text)?.status).toBe(200);
    expect(out.closed).toBe(true);
  });

  // node:http aborts requests still in flight when the client half-closes (server.httpAllowHalfOpen is false), so
  // an answer that needs an await (the audit write) is never sent. What must hold: the decision is audited exactly
  // once and nothing else happens; the agent, having no answer, has nothing to act on. See "Findings".
  it('FIN right after a complete evaluation: decided and audited once; the answer, if any, matches the audit', async () => {
    const path = `/data/fin-${Date.now()}`;
    const body = JSON.stringify({ type: 'file_read', path });
    const out = await rawExchange(ctx.s.port, [`${evaluateHead(body.length)}${body}`], { endAfter: true });
    expect(out.closed).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    const entries = (await auditEntries(ctx.s.auditPath)).filter((e) => e.action?.path === path);
    expect(entries).toHaveLength(1);
    expect(entries[0]?.effect).toBe('ALLOW');
    const res = firstResponse(out.text);
    if (res) expect(JSON.parse(res.body).decision_id).toBe(entries[0]?.decision_id);
  });

  it('FIN after the headers of a POST whose body never comes: no decision is made, the socket is let go', async () => {
    const before = (await auditEntries(ctx.s.auditPath)).length;
    const out = await rawExchange(ctx.s.port, [evaluateHead(100)], { endAfter: true, deadlineMs: 3000 });
    expect(out.closed).toBe(true);
    const res = firstResponse(out.text);
    if (res) expect(res.status).toBe(400);
    expect((await auditEntries(ctx.s.auditPath)).length).toBe(before);
  });

  it('FIN after a proxied request head with a promised body: the upstream gets no complete request', async () => {
    const hits = ctx.up.hits;
    const out = await rawExchange(
      ctx.s.port,
      [
        `POST http://127.0.0.1:${ctx.up.port}/half HTTP/1.1\r\nhost: 127.0.0.1:${ctx.up.port}\r\ncontent-length: 50\r\n\r\nabc`,
      ],
      { endAfter: true, deadlineMs: 3000 },
    );
    expect(out.closed).toBe(true);
    // The upstream may have seen the head (bodies stream), but it never answered a complete request to the agent.
    const res = firstResponse(out.text);
    if (res) expect(res.status).not.toBe(200);
    expect(ctx.up.hits - hits).toBeLessThanOrEqual(1);
  });

  it('FIN after a CONNECT head: the tunnel is decided and torn down, nothing leaks', async () => {
    const out = await rawExchange(
      ctx.s.port,
      [`CONNECT 127.0.0.1:${ctx.up.port} HTTP/1.1\r\nhost: x\r\n\r\n`],
      {
        endAfter: true,
        deadlineMs: 3000,
      },
    );
    expect(out.closed).toBe(true);
    for (let i = 0; i < 40 && (await tunnelsOpen()) > 0; i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(await tunnelsOpen()).toBe(0);
  });
});

async function tunnelsOpen(): Promise<number> {
  const m = await ctx.s.metrics.tunnels.get();
  return m.values[0]?.value ?? 0;
}

describe('slowloris clients', () => {
  // Headers dribbled one short line every 100 ms for 3 ctx.s. With a 500 ms headers timeout the sidecar must answer 408
  // and close while the client is still dribbling; a client that finishes its headers gets a 200, and that is
  // the failure. Found by this suite: node:http checks headersTimeout only every connectionsCheckingInterval
  // (default 30 s); createAgentServer now sets it from the headers timeout. See docs/reliability.md, "Bugs found".
  it('headers dribbled past the headers timeout: 408 REQUEST_TIMEOUT before the headers complete', async () => {
    const dribble: Array<string | number> = ['GET /healthz HTTP/1.1\r\n'];
    for (let i = 0; i < 30; i++) dribble.push(100, `x-drip-${i}: 1\r\n`);
    dribble.push('\r\n');
    const out = await rawExchange(ctx.s.port, dribble, { deadlineMs: 4500, stopWhen: complete });
    const res = firstResponse(out.text);
    expect(res?.status).toBe(408);
    expect(errorCodeOf(res?.body ?? '')).toBe('SIDECAR_ERR_REQUEST_TIMEOUT');
  });

  it('a client that sends a request line and then nothing does not hold up anyone else', async () => {
    const idle = rawExchange(ctx.s.port, ['GET /healthz HTTP/1.1\r\n'], { deadlineMs: 1000 });
    expect(await stillServing(ctx.s.url)).toBe(true);
    const out = await idle;
    // Within 1 s the timeout has not been enforced yet (see the test above); the point here is isolation.
    expect(out.text === '' || firstResponse(out.text)?.status === 408).toBe(true);
  });
});
