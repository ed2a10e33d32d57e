// The model stub on the wire: health, routing errors, exact SSE framing, delays and request recording.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ModelStub, startModelStub } from '../../../agents/model-stub/server.ts';

const anthropicHeaders = {
  'content-type': 'application/json',
  'anthropic-version': '2023-06-01',
  'x-api-key': 'k',
};
const openaiHeaders = { 'content-type': 'application/json', authorization: 'Bearer k' };

let stub: ModelStub;

beforeAll(async () => {
  stub = await startModelStub({ now: () => 1_700_000_000_000 });
});
afterAll(() => stub.close());

function post(path: string, headers: Record<string, string>, body: unknown): Promise<Response> {
  return fetch(`${stub.url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
}

describe('lifecycle', () => {
  it('closes at the end of an await using scope', async () => {
    let url: string;
    {
      await using scoped = await startModelStub();
      url = scoped.url;
      expect((await fetch(`${url}/health`)).status).toBe(200);
    }
    await expect(fetch(`${url}/health`)).rejects.toThrow();
  });
});

describe('routing', () => {
  it('answers GET /health with 200', async () => {
    const res = await fetch(`${stub.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  const cases = [
    {
      note: 'unknown path, Anthropic headers',
      path: '/v1/nope',
      headers: anthropicHeaders,
      body: { model: 'm' },
      status: 404,
      want: { type: 'error', error: { type: 'not_found_error' } },
    },
    {
      note: 'unknown path, OpenAI headers',
      path: '/v1/nope',
      headers: openaiHeaders,
      body: { model: 'm' },
      status: 404,
      want: { error: { type: 'invalid_request_error', param: null, code: null } },
    },
    {
      note: 'Anthropic without anthropic-version',
      path: '/v1/messages',
      headers: { 'x-api-key': 'k' },
      body: { model: 'm', max_tokens: 8, messages: [{ role: 'user', content: 'hi' }] },
      status: 400,
      want: { type: 'error', error: { type: 'invalid_request_error' } },
    },
    {
      note: 'Anthropic without max_tokens',
      path: '/v1/messages',
      headers: anthropicHeaders,
      body: { model: 'm', messages: [{ role: 'user', content: 'hi' }] },
      status: 400,
      want: {
        type: 'error',
        error: { type: 'invalid_request_error', message: 'max_tokens: Field required' },
      },
    },
    {
      note: 'OpenAI forcing a tool it does not offer',
      path: '/v1/chat/completions',
      headers: openaiHeaders,
      body: {
        model: 'm',
        messages: [{ role: 'user', content: 'hi' }],
        tools: [{ type: 'function', function: { name: 'a' } }],
        tool_choice: { type: 'function', function: { name: 'b' } },
      },
      status: 400,
      want: { error: { type: 'invalid_request_error', param: 'tool_choice' } },
    },
  ];

  it.each(cases)('$note: $status', async ({ path, headers, body, status, want }) => {
    const res = await post(path, headers, body);
    expect(res.status).toBe(status);
    expect(await res.json()).toMatchObject(want);
  });

  it('answers malformed JSON with a vendor 400', async () => {
    const res = await fetch(`${stub.url}/v1/chat/completions`, {
      method: 'POST',
      headers: openaiHeaders,
      body: '{',
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { type: 'invalid_request_error' } });
  });

  it('requires no key unless configured', async () => {
    const res = await post(
      '/v1/chat/completions',
      {},
      { model: 'm', messages: [{ role: 'user', content: 'hi' }] },
    );
    expect(res.status).toBe(200);
  });
});

describe('wire format', () => {
  it('frames Anthropic SSE as event: and data: lines, exactly', async () => {
    const res = await post('/v1/messages', anthropicHeaders, {
      model: 'm',
      max_tokens: 8,
      stream: true,
      messages: [{ role: 'user', content: 'hi' }],
    });
    expect(res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    const frames = (await res.text()).split('\n\n');
    expect(frames.pop()).toBe('');
    const parsed = frames.map((frame) => {
      const [eventLine, dataLine, ...rest] = frame.split('\n');
      expect(rest).toEqual([]);
      expect(eventLine).toMatch(/^event: [a-z_]+$/);
      expect(dataLine).toMatch(/^data: \{/);
      const data = JSON.parse(dataLine?.slice('data: '.length) ?? '') as { type: string };
      expect(data.type).toBe(eventLine?.slice('event: '.length));
      return data;
    });
    // "Stub reply: hi" streams as three word deltas.
    expect(parsed.map((d) => d.type)).toEqual([
      'message_start',
      'content_block_start',
      'ping',
      'content_block_delta',
      'content_block_delta',
      'content_block_delta',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
  });

  it('frames OpenAI SSE as data: lines ending in [DONE], with the injected clock', async () => {
    const res = await post('/v1/chat/completions', openaiHeaders, {
      model: 'm',
      stream: true,
      messages: [{ role: 'user', content: 'hi' }],
    });
    const frames = (await res.text()).split('\n\n');
    expect(frames.pop()).toBe('');
    expect(frames.every((f) => /^data: [^\n]+$/.test(f))).toBe(true);
    expect(frames.at(-1)).toBe('data: [DONE]');
    expect(JSON.parse(frames[0]?.slice('data: '.length) ?? '')).toMatchObject({ created: 1_700_000_000 });
  });
});

describe('delays and recording', () => {
  it('stub-slow waits x-stub-delay-ms, then answers', async () => {
    const started = performance.now();
    const res = await post(
      '/v1/chat/completions',
      { ...openaiHeaders, 'x-stub-delay-ms': '150' },
      { model: 'stub-slow', messages: [{ role: 'user', content: 'hi' }] },
    );
    expect(res.status).toBe(200);
    expect(performance.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('x-stub-chunk-delay-ms spaces streamed events', async () => {
    const started = performance.now();
    const res = await post(
      '/v1/chat/completions',
      { ...openaiHeaders, 'x-stub-chunk-delay-ms': '20' },
      { model: 'm', stream: true, messages: [{ role: 'user', content: 'hi' }] },
    );
    const frames = (await res.text()).split('\n\n').filter((f) => f !== '');
    expect(performance.now() - started).toBeGreaterThanOrEqual((frames.length - 1) * 20 - 10);
  });

  it('records every request, including the unparseable', async () => {
    stub.requests.length = 0;
    await fetch(`${stub.url}/v1/messages?beta=true`, {
      method: 'POST',
      headers: anthropicHeaders,
      body: 'not json',
    });
    expect(stub.requests).toEqual([
      {
        method: 'POST',
        path: '/v1/messages',
        headers: expect.objectContaining({ 'x-api-key': 'k' }),
        body: undefined,
        rawBody: 'not json',
      },
    ]);
  });
});

describe('request record bound', () => {
  const cases: Array<{ note: string; limit: number | undefined; sent: number; kept: string[] }> = [
    { note: 'the default keeps up to 1000', limit: undefined, sent: 3, kept: ['/h0', '/h1', '/h2'] },
    { note: 'a limit keeps the most recent', limit: 2, sent: 5, kept: ['/h3', '/h4'] },
    { note: 'a limit not reached keeps all', limit: 4, sent: 3, kept: ['/h0', '/h1', '/h2'] },
    { note: '0 keeps none (a long-running process)', limit: 0, sent: 3, kept: [] },
  ];

  it.each(cases)('$note', async ({ limit, sent, kept }) => {
    await using bounded = await startModelStub(limit === undefined ? {} : { recordLimit: limit });
    for (let i = 0; i < sent; i++) await (await fetch(`${bounded.url}/h${i}`)).arrayBuffer();
    expect(bounded.requests.map((r) => r.path)).toEqual(kept);
  });
});
