// Upstreams that fail the proxy: refuse, reset before or during the response, hang, or trickle their body. Each case
// checks what the agent sees, that the decision was audited before the upstream was tried, that the sidecar still
// serves, and that the audit chain verifies.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  auditEntries,
  closedPort,
  errorCodeOf,
  type FaultyUpstream,
  proxied,
  rawExchange,
  type SidecarUnderTest,
  splitResponses,
  startFaultyUpstream,
  startInProcess,
  stillServing,
  verifyChain,
} from './harness.ts';

// Short limits so a hang or a stall ends within the test; the defaults are 30 s and 60 s.
const LIMITS = { upstreamHeadersTimeoutMs: 300, upstreamBodyTimeoutMs: 300, connectTimeoutMs: 1000 };

let s: SidecarUnderTest;
let up: FaultyUpstream;

beforeAll(async () => {
  s = await startInProcess({ proxyLimits: LIMITS });
  up = await startFaultyUpstream();
});
afterAll(async () => {
  await up.close();
  await s.close();
});
afterEach(async () => {
  // Every fault leaves the sidecar serving and the chain intact.
  expect(await stillServing(s.url)).toBe(true);
  expect((await verifyChain(s.auditPath)).ok).toBe(true);
  up.behaviour = { kind: 'ok' };
});

async function auditedAllow(decisionId: string | string[] | undefined) {
  const entry = (await auditEntries(s.auditPath)).find((e) => e.decision_id === decisionId);
  expect(decisionId).toBeDefined();
  expect(entry?.effect).toBe('ALLOW');
  expect(entry?.kind).toBe('proxy');
}

describe('upstream faults through the forward proxy', () => {
  it('a healthy upstream answers (the control case)', async () => {
    const r = await proxied(s.port, `http://127.0.0.1:${up.port}/ok`);
    expect(r.status).toBe(200);
    expect(r.body).toBe('hello from upstream');
    await auditedAllow(r.headers['x-sidecar-decision-id']);
  });

  it('refuses the connection: 502 UPSTREAM_UNREACHABLE with the decision id', async () => {
    const port = await closedPort();
    const r = await proxied(s.port, `http://127.0.0.1:${port}/`);
    expect(r.status).toBe(502);
    expect(errorCodeOf(r.body)).toBe('SIDECAR_ERR_UPSTREAM_UNREACHABLE');
    await auditedAllow(r.headers['x-sidecar-decision-id']);
  });

  it('resets before sending headers: 502, never a stack trace', async () => {
    up.behaviour = { kind: 'reset-before-headers' };
    const r = await proxied(s.port, `http://127.0.0.1:${up.port}/reset`);
    expect(r.status).toBe(502);
    expect(errorCodeOf(r.body)).toMatch(/^SIDECAR_ERR_UPSTREAM_(UNREACHABLE|INVALID)$/);
    expect(r.body).not.toMatch(/ECONNRESET|at .*\.ts|127\.0\.0\.1/);
    expect(up.hits).toBeGreaterThan(0);
  });

  it('resets in the middle of the body: the agent gets a cut response, never a completed one', async () => {
    up.behaviour = { kind: 'reset-mid-body' };
    const r = await proxied(s.port, `http://127.0.0.1:${up.port}/mid`).catch(
      (err: NodeJS.ErrnoException) => ({
        status: 0,
        headers: {},
        body: '',
        cut: err.code ?? err.message,
      }),
    );
    // Headers (200, content-length 1000) were already relayed: the honest signal left is a cut connection.
    expect(r.cut).toBeDefined();
    expect(r.body.length).toBeLessThan(1000);
  });

  it('hangs before headers: 504 UPSTREAM_TIMEOUT after the configured headers timeout', async () => {
    up.behaviour = { kind: 'hang' };
    const r = await proxied(s.port, `http://127.0.0.1:${up.port}/hang`);
    expect(r.status).toBe(504);
    expect(errorCodeOf(r.body)).toBe('SIDECAR_ERR_UPSTREAM_TIMEOUT');
    await auditedAllow(r.headers['x-sidecar-decision-id']);
  });

  it('trickles slower than the body timeout: the response is cut', async () => {
    up.behaviour = { kind: 'trickle', everyMs: 1000, bytes: 50 };
    const r = await proxied(s.port, `http://127.0.0.1:${up.port}/slow`).catch(
      (err: NodeJS.ErrnoException) => ({
        status: 0,
        headers: {},
        body: '',
        cut: err.code ?? err.message,
      }),
    );
    expect(r.cut).toBeDefined();
    expect(r.body.length).toBeLessThan(50);
  });

  it('trickles just inside the body timeout (a slowloris response): it streams, and an agent that gives up frees the upstream', async () => {
    up.behaviour = { kind: 'trickle', everyMs: 50, bytes: 10_000 };
    const closedBefore = up.peerClosed;
    const ac = new AbortController();
    const pending = proxied(s.port, `http://127.0.0.1:${up.port}/drip`, { signal: ac.signal }).catch(
      (err: Error) => err,
    );
    await new Promise((r) => setTimeout(r, 400));
    ac.abort();
    // The agent gave up: its request ends in an abort (or, on a stalled event loop, the body timeout cut it first).
    const outcome = await pending;
    expect(outcome instanceof Error || outcome.cut !== undefined).toBe(true);
    // The sidecar passes the agent's hang-up on: the upstream connection is closed, not left dripping.
    for (let i = 0; i < 40 && up.peerClosed === closedBefore; i++)
      await new Promise((r) => setTimeout(r, 50));
    expect(up.peerClosed).toBeGreaterThan(closedBefore);
  });

  it('CONNECT to a port that refuses: 502 on the tunnel socket, the decision audited', async () => {
    const port = await closedPort();
    const out = await rawExchange(s.port, [
      `CONNECT 127.0.0.1:${port} HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\n\r\n`,
    ]);
    const [res] = splitResponses(out.text);
    expect(res?.status).toBe(502);
    expect(errorCodeOf(res?.body ?? '')).toBe('SIDECAR_ERR_UPSTREAM_UNREACHABLE');
    await auditedAllow(res?.headers['x-sidecar-decision-id']);
  });

  it('twenty hanging upstream requests do not stall anything else', async () => {
    up.behaviour = { kind: 'hang' };
    const hanging = Array.from({ length: 20 }, (_, i) =>
      proxied(s.port, `http://127.0.0.1:${up.port}/h${i}`),
    );
    // While they hang, decisions and health still answer.
    expect(await stillServing(s.url)).toBe(true);
    const results = await Promise.all(hanging);
    expect(results.map((r) => r.status)).toEqual(Array(20).fill(504));
  });
});
