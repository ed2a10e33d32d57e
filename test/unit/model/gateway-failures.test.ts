// Upstream down, slow, failing or resetting; no key; streams relayed as they come and agents that leave mid-stream.
import { once } from 'node:events';
import { createServer } from 'node:net';
import type Anthropic from '@anthropic-ai/sdk';
import { describe, expect, it, vi } from 'vitest';
import { type ModelStub, STUB_HEADERS } from '../../../agents/model-stub/server.ts';
import { BASE_POLICY, type GatewayUnderTest, sdkError, startGateway, useStubGateway } from './support.ts';

const BUDGETED = `${BASE_POLICY}budgets:\n  - { name: daily, period: day, max_tokens: 1000000 }\n`;
const say = (content: string): Anthropic.MessageParam[] => [{ role: 'user', content }];

let stub: ModelStub;
let gw: GatewayUnderTest;

async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

useStubGateway({ policy: BUDGETED, config: { timeouts: { headers_ms: 300 } } }, (s, g) => {
  stub = s;
  gw = g;
});

const nothingReserved = () => expect(gw.gateway.spend().budgets[0]?.reserved_tokens).toBe(0);

describe('vendor errors and faults', () => {
  it.each([
    // model, status the agent sees, Anthropic error type, where it came from, whether the reservation is charged: a
    // vendor error is not billed; a reset or a timeout after the whole request was sent may be (the vendor has it).
    ['stub-error-500', 500, 'api_error', 'stub-error-500', false],
    ['stub-error-429', 429, 'rate_limit_error', 'stub-error-429', false],
    ['stub-reset', 502, 'api_error', 'SIDECAR_ERR_UPSTREAM_UNREACHABLE', true],
    ['stub-slow', 504, 'api_error', 'SIDECAR_ERR_UPSTREAM_TIMEOUT', true],
  ])(
    '%s: the agent gets %i (%s, %s); reservation charged: %s',
    async (model, status, type, says, charged) => {
      const spentBefore = gw.gateway.spend().budgets[0]?.spent_tokens ?? 0;
      const client = gw.anthropic({ headers: { [STUB_HEADERS.delayMs]: '10000' } });
      const err = await sdkError(client.messages.create({ model, max_tokens: 16, messages: say('x') }));
      expect(err.status).toBe(status);
      expect(err.error).toMatchObject({ type: 'error', error: { type } });
      expect(err.message).toContain(says);
      nothingReserved();
      const spent = (gw.gateway.spend().budgets[0]?.spent_tokens ?? 0) - spentBefore;
      // The reservation: the output limit plus the input estimate.
      if (charged) expect(spent).toBeGreaterThan(16);
      else expect(spent).toBe(0);
      // The sidecar is still up.
      const ok = await gw
        .anthropic()
        .messages.create({ model: 'stub-small', max_tokens: 16, messages: say('still there?') });
      expect(ok.content[0]).toMatchObject({ type: 'text' });
    },
  );

  it('passes an OpenAI vendor error through in its own format', async () => {
    const err = await sdkError(
      gw
        .openai()
        .chat.completions.create({ model: 'stub-error-429', messages: [{ role: 'user', content: 'x' }] }),
    );
    expect(err.status).toBe(429);
    expect(err.error).toMatchObject({ type: 'requests', code: 'rate_limit_exceeded' });
    nothingReserved();
  });

  it('answers 502 in each vendor format when the upstream is down', async () => {
    const down = await startGateway(`http://127.0.0.1:${await closedPort()}`, { policy: BUDGETED });
    try {
      const a = await sdkError(
        down.anthropic().messages.create({ model: 'stub-small', max_tokens: 8, messages: say('x') }),
      );
      expect(a.status).toBe(502);
      expect(a.error).toMatchObject({ type: 'error', error: { type: 'api_error' } });
      expect(a.message).toContain('SIDECAR_ERR_UPSTREAM_UNREACHABLE');
      const o = await sdkError(
        down
          .openai()
          .chat.completions.create({ model: 'stub-small', messages: [{ role: 'user', content: 'x' }] }),
      );
      expect(o.status).toBe(502);
      expect(o.error).toMatchObject({ type: 'server_error', code: 'SIDECAR_ERR_UPSTREAM_UNREACHABLE' });
      expect(down.gateway.spend().budgets[0]).toMatchObject({ spent_tokens: 0, reserved_tokens: 0 });
    } finally {
      await down.close();
    }
  });

  it('refuses every call, without forwarding, when no key is configured', async () => {
    const keyless = await startGateway(stub.url, { env: {} });
    try {
      const err = await sdkError(
        keyless.anthropic().messages.create({ model: 'stub-small', max_tokens: 8, messages: say('x') }),
      );
      expect(err.status).toBe(502);
      expect(err.headers?.get('x-should-retry')).toBe('false');
      expect(stub.requests).toHaveLength(0);
      const entry = (await keyless.audit()).find(
        (e) => e.decision_id === err.headers?.get('x-sidecar-decision-id'),
      );
      expect(entry).toMatchObject({ effect: 'DENY', reason: 'model_key_missing' });
      expect(
        keyless.logs.some((l) => l['msg'] === 'no API key configured: every /anthropic call is refused'),
      ).toBe(true);
    } finally {
      await keyless.close();
    }
  });
});

describe('request limits', () => {
  it('refuses a body over max_request_bytes (413) and a compressed body (415), in the vendor format', async () => {
    const small = await startGateway(stub.url, { config: { max_request_bytes: 1000 } });
    try {
      const big = await sdkError(
        small
          .anthropic()
          .messages.create({ model: 'stub-small', max_tokens: 8, messages: say('x'.repeat(2000)) }),
      );
      expect(big.status).toBe(413);
      expect(big.error).toMatchObject({ type: 'error', error: { type: 'request_too_large' } });
      const gz = await fetch(`${small.url}/openai/v1/chat/completions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' },
        body: 'not really gzip',
      });
      expect(gz.status).toBe(415);
      expect(await gz.json()).toMatchObject({
        error: { type: 'invalid_request_error', code: 'SIDECAR_ERR_UNSUPPORTED_MEDIA_TYPE' },
      });
      expect(stub.requests).toHaveLength(0);
    } finally {
      await small.close();
    }
  });
});

describe('streaming', () => {
  it('relays each event as it arrives instead of buffering the stream', async () => {
    const delay = 150;
    const client = gw.anthropic({ headers: { [STUB_HEADERS.chunkDelayMs]: String(delay) } });
    const stream = await client.messages.create({
      model: 'stub-small',
      max_tokens: 64,
      stream: true,
      messages: say('one two three'),
    });
    const arrivals: number[] = [];
    for await (const _event of stream) arrivals.push(performance.now());
    // The stub pauses `delay` ms between events: relayed one by one they arrive spread out, buffered all at once.
    expect(arrivals.length).toBeGreaterThan(4);
    expect((arrivals.at(-1) as number) - (arrivals[0] as number)).toBeGreaterThanOrEqual(
      delay * (arrivals.length - 2),
    );
  });

  it('charges the whole reservation of a stream the agent abandons, and keeps serving', async () => {
    const client = gw.anthropic({ headers: { [STUB_HEADERS.chunkDelayMs]: '200' } });
    const spentBefore = gw.gateway.spend().budgets[0]?.spent_tokens ?? 0;
    const stream = await client.messages.create({
      model: 'stub-small',
      max_tokens: 64,
      stream: true,
      messages: say('a b c d e f'),
    });
    for await (const event of stream) {
      expect(event.type).toBe('message_start');
      stream.controller.abort();
      break;
    }
    // The usage never arrived, so the call is charged at its reservation once the gateway sees the agent go.
    await vi.waitFor(() => nothingReserved(), { timeout: 10_000 });
    const budget = gw.gateway.spend().budgets[0];
    expect((budget?.spent_tokens ?? 0) - spentBefore).toBeGreaterThanOrEqual(64);
    expect(gw.logs.some((l) => l['settlement'] === 'charge_reserved' && l['reason'] === 'client_gone')).toBe(
      true,
    );
    const ok = await gw
      .anthropic()
      .messages.create({ model: 'stub-small', max_tokens: 16, messages: say('next') });
    expect(ok.type).toBe('message');
  });
});
