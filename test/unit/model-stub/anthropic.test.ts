// The model stub speaks Anthropic Messages well enough for the official SDK to parse it, streamed or not.

import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ModelStub, startModelStub } from '../../../agents/model-stub/server.ts';

const KEY = 'sk-ant-stub-key';
const tools: Anthropic.Tool[] = [
  {
    name: 'get_weather',
    description: 'Weather for a city',
    input_schema: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } } },
  },
  { name: 'search', input_schema: { type: 'object', properties: { q: { type: 'string' } } } },
];

let stub: ModelStub;
let client: Anthropic;

beforeAll(async () => {
  stub = await startModelStub({ requireApiKey: KEY });
  client = new Anthropic({ apiKey: KEY, baseURL: stub.url, maxRetries: 0 });
});
afterAll(() => stub.close());

/** The stub's token rule, restated here so the test checks it rather than reuses it. */
function inputTokens(body: { messages: unknown; system?: unknown; tools?: unknown }): number {
  const parts = [body.messages, body.system, body.tools].filter((p) => p !== undefined);
  return Math.ceil(parts.reduce((sum: number, p) => sum + JSON.stringify(p).length, 0) / 4);
}

function userSays(text: string): Anthropic.MessageParam[] {
  return [{ role: 'user', content: text }];
}

describe('non-streaming', () => {
  it('answers text with exact usage', async () => {
    const messages = userSays('hello there');
    const message = await client.messages.create({
      model: 'claude-stub',
      max_tokens: 64,
      system: 'Be brief.',
      messages,
    });
    expect(message).toMatchObject({
      type: 'message',
      role: 'assistant',
      model: 'claude-stub',
      content: [{ type: 'text', text: 'Stub reply: hello there' }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: {
        input_tokens: inputTokens({ messages, system: 'Be brief.' }),
        output_tokens: Math.ceil('Stub reply: hello there'.length / 4),
      },
    });
    expect(message.id).toMatch(/^msg_/);
  });

  it('calls the tool the text names, with arguments from its schema', async () => {
    const messages = userSays('Use get_weather city=Paris days=3 unit=C');
    const message = await client.messages.create({ model: 'claude-stub', max_tokens: 64, messages, tools });
    expect(message.stop_reason).toBe('tool_use');
    expect(message.content).toEqual([
      {
        type: 'tool_use',
        id: expect.stringMatching(/^toolu_/),
        name: 'get_weather',
        input: { city: 'Paris', days: 3 },
      },
    ]);
    expect(message.usage).toMatchObject({
      input_tokens: inputTokens({ messages, tools }),
      output_tokens: Math.ceil(JSON.stringify({ city: 'Paris', days: 3 }).length / 4),
    });
  });

  it('calls the tool tool_choice forces', async () => {
    const message = await client.messages.create({
      model: 'claude-stub',
      max_tokens: 64,
      messages: userSays('anything q=cats'),
      tools,
      tool_choice: { type: 'tool', name: 'search' },
    });
    expect(message.content).toMatchObject([{ type: 'tool_use', name: 'search', input: { q: 'cats' } }]);
  });

  it('acknowledges a tool_result with its first 200 characters', async () => {
    const result = `${'x'.repeat(200)}TAIL`;
    const message = await client.messages.create({
      model: 'claude-stub',
      max_tokens: 64,
      tools,
      messages: [
        { role: 'user', content: 'search q=cats' },
        {
          role: 'assistant',
          content: [{ type: 'tool_use', id: 'toolu_1', name: 'search', input: { q: 'cats' } }],
        },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'text', text: result }] },
          ],
        },
      ],
    });
    expect(message.content).toEqual([
      { type: 'text', text: `Tool result: ${'x'.repeat(200)}`, citations: undefined },
    ]);
  });

  it('records what it received', async () => {
    stub.requests.length = 0;
    await client.messages.create({ model: 'claude-stub', max_tokens: 8, messages: userSays('hi') });
    expect(stub.requests).toEqual([
      expect.objectContaining({
        method: 'POST',
        path: '/v1/messages',
        headers: expect.objectContaining({
          authorization: `Bearer ${KEY}`,
          'anthropic-version': expect.any(String),
        }),
        body: { model: 'claude-stub', max_tokens: 8, messages: userSays('hi') },
      }),
    ]);
  });
});

describe('streaming', () => {
  it('streams text in the API event order and finalMessage carries usage', async () => {
    const messages = userSays('stream this please');
    const stream = client.messages.stream({ model: 'claude-stub', max_tokens: 64, messages });
    const types: string[] = [];
    let text = '';
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') text += event.delta.text;
    }
    const final = await stream.finalMessage();

    expect(types[0]).toBe('message_start');
    expect(types[1]).toBe('content_block_start');
    expect(types.slice(-3)).toEqual(['content_block_stop', 'message_delta', 'message_stop']);
    expect(types.slice(2, -3).every((t) => t === 'content_block_delta')).toBe(true);
    expect(text).toBe('Stub reply: stream this please');
    expect(final.content).toMatchObject([{ type: 'text', text }]);
    expect(final.stop_reason).toBe('end_turn');
    expect(final.usage).toMatchObject({
      input_tokens: inputTokens({ messages }),
      output_tokens: Math.ceil(text.length / 4),
    });
  });

  it('streams tool_use as input_json_delta', async () => {
    const stream = client.messages.stream({
      model: 'claude-stub',
      max_tokens: 64,
      tools,
      messages: userSays('get_weather city="San Francisco" days=10'),
    });
    const partials: string[] = [];
    stream.on('inputJson', (partial) => partials.push(partial));
    const final = await stream.finalMessage();
    const input = { city: 'San Francisco', days: 10 };
    expect(partials.join('')).toBe(JSON.stringify(input));
    expect(final.stop_reason).toBe('tool_use');
    expect(final.content).toMatchObject([{ type: 'tool_use', name: 'get_weather', input }]);
    expect(final.usage.output_tokens).toBe(Math.ceil(JSON.stringify(input).length / 4));
  });
});

describe('authentication', () => {
  // The SDK sends its key as Authorization: Bearer; the API's own header is x-api-key. Both are accepted.
  const cases = [
    { note: 'x-api-key alone', headers: { 'x-api-key': KEY }, ok: true },
    { note: 'wrong x-api-key', headers: { 'x-api-key': 'sk-wrong' }, ok: false },
    {
      note: 'x-api-key with a stray wrong bearer',
      headers: { 'x-api-key': KEY, authorization: 'Bearer sk-agent' },
      ok: false,
    },
    { note: 'no credential at all', headers: {}, ok: false },
  ];

  it.each(cases)('$note', async ({ headers, ok }) => {
    const other = new Anthropic({ apiKey: null, authToken: null, baseURL: stub.url, maxRetries: 0 });
    const result = await other.messages
      .create(
        { model: 'claude-stub', max_tokens: 8, messages: userSays('hi') },
        { headers: { authorization: null, ...headers } },
      )
      .catch((e: unknown) => e);
    if (ok) expect(result).toMatchObject({ type: 'message' });
    else expect(result).toMatchObject({ status: 401, error: { error: { type: 'authentication_error' } } });
  });
});

describe('errors', () => {
  const cases = [
    { note: 'stub-error-500', model: 'stub-error-500', apiKey: KEY, status: 500, type: 'api_error' },
    { note: 'stub-error-429', model: 'stub-error-429', apiKey: KEY, status: 429, type: 'rate_limit_error' },
    {
      note: 'wrong API key',
      model: 'claude-stub',
      apiKey: 'sk-wrong',
      status: 401,
      type: 'authentication_error',
    },
  ];

  it.each(cases)('$note surfaces as APIError $status', async ({ model, apiKey, status, type }) => {
    const other = new Anthropic({ apiKey, baseURL: stub.url, maxRetries: 0 });
    const error = await other.messages
      .create({ model, max_tokens: 8, messages: userSays('hi') })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Anthropic.APIError);
    expect(error).toMatchObject({
      status,
      error: { type: 'error', error: { type, message: expect.any(String) } },
    });
  });

  it('fails a stream before the first event with the same error', async () => {
    const stream = client.messages.stream({
      model: 'stub-error-500',
      max_tokens: 8,
      messages: userSays('hi'),
    });
    await expect(stream.finalMessage()).rejects.toMatchObject({ status: 500 });
  });

  it('stub-reset surfaces as a connection error', async () => {
    const error = await client.messages
      .create({ model: 'stub-reset', max_tokens: 8, messages: userSays('hi') })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Anthropic.APIConnectionError);
  });
});
