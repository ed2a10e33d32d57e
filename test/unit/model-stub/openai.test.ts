// The model stub speaks OpenAI Chat Completions well enough for the official SDK to parse it, streamed or not.

import OpenAI from 'openai';
import type { ChatCompletionMessageParam, ChatCompletionTool } from 'openai/resources/chat/completions';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ModelStub, startModelStub } from '../../../agents/model-stub/server.ts';

const KEY = 'sk-openai-stub-key';
const tools: ChatCompletionTool[] = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer' } } },
    },
  },
  {
    type: 'function',
    function: { name: 'search', parameters: { type: 'object', properties: { q: { type: 'string' } } } },
  },
];

let stub: ModelStub;
let client: OpenAI;

beforeAll(async () => {
  stub = await startModelStub({ requireApiKey: KEY });
  client = new OpenAI({ apiKey: KEY, baseURL: `${stub.url}/v1`, maxRetries: 0 });
});
afterAll(() => stub.close());

/** The stub's token rule, restated here so the test checks it rather than reuses it. */
function promptTokens(messages: unknown, withTools?: unknown): number {
  const length =
    JSON.stringify(messages).length + (withTools === undefined ? 0 : JSON.stringify(withTools).length);
  return Math.ceil(length / 4);
}

function userSays(text: string): ChatCompletionMessageParam[] {
  return [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: text },
  ];
}

describe('non-streaming', () => {
  it('answers text with exact usage', async () => {
    const messages = userSays('hello there');
    const completion = await client.chat.completions.create({ model: 'gpt-stub', messages });
    const text = 'Stub reply: hello there';
    expect(completion).toMatchObject({
      object: 'chat.completion',
      model: 'gpt-stub',
      choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: 'stop' }],
      usage: {
        prompt_tokens: promptTokens(messages),
        completion_tokens: Math.ceil(text.length / 4),
        total_tokens: promptTokens(messages) + Math.ceil(text.length / 4),
      },
    });
    expect(completion.created).toEqual(expect.any(Number));
  });

  it('calls the tool the text names, with arguments from its schema', async () => {
    const messages = userSays('Use get_weather city=Paris days=3 unit=C');
    const completion = await client.chat.completions.create({ model: 'gpt-stub', messages, tools });
    const choice = completion.choices[0];
    const call = choice?.message.tool_calls?.[0];
    expect(choice?.finish_reason).toBe('tool_calls');
    expect(choice?.message.content).toBeNull();
    expect(call).toMatchObject({
      id: expect.stringMatching(/^call_/),
      type: 'function',
      function: { name: 'get_weather' },
    });
    const args = call?.type === 'function' ? call.function.arguments : '';
    expect(JSON.parse(args)).toEqual({ city: 'Paris', days: 3 });
    expect(completion.usage).toMatchObject({
      prompt_tokens: promptTokens(messages, tools),
      completion_tokens: Math.ceil(args.length / 4),
    });
  });

  it('calls the tool tool_choice forces', async () => {
    const completion = await client.chat.completions.create({
      model: 'gpt-stub',
      messages: userSays('anything q=cats'),
      tools,
      tool_choice: { type: 'function', function: { name: 'search' } },
    });
    expect(completion.choices[0]?.message.tool_calls).toMatchObject([
      { type: 'function', function: { name: 'search', arguments: '{"q":"cats"}' } },
    ]);
  });

  it('acknowledges a tool message with its first 200 characters', async () => {
    const completion = await client.chat.completions.create({
      model: 'gpt-stub',
      tools,
      messages: [
        { role: 'user', content: 'search q=cats' },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            { id: 'call_1', type: 'function', function: { name: 'search', arguments: '{"q":"cats"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'call_1', content: `${'y'.repeat(200)}TAIL` },
      ],
    });
    expect(completion.choices[0]?.message.content).toBe(`Tool result: ${'y'.repeat(200)}`);
  });

  it('records what it received', async () => {
    stub.requests.length = 0;
    await client.chat.completions.create({ model: 'gpt-stub', messages: userSays('hi') });
    expect(stub.requests).toEqual([
      expect.objectContaining({
        method: 'POST',
        path: '/v1/chat/completions',
        headers: expect.objectContaining({ authorization: `Bearer ${KEY}` }),
        body: { model: 'gpt-stub', messages: userSays('hi') },
      }),
    ]);
  });
});

describe('streaming', () => {
  it('streams text chunks, then a usage-only chunk when include_usage is set', async () => {
    const messages = userSays('stream this please');
    const stream = client.chat.completions.stream({
      model: 'gpt-stub',
      messages,
      stream_options: { include_usage: true },
    });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    const final = await stream.finalChatCompletion();
    const text = 'Stub reply: stream this please';
    const usage = {
      prompt_tokens: promptTokens(messages),
      completion_tokens: Math.ceil(text.length / 4),
      total_tokens: promptTokens(messages) + Math.ceil(text.length / 4),
    };

    expect(chunks.every((c) => c.object === 'chat.completion.chunk')).toBe(true);
    expect(chunks.map((c) => c.choices[0]?.delta.content ?? '').join('')).toBe(text);
    expect(chunks.at(-2)?.choices[0]?.finish_reason).toBe('stop');
    expect(chunks.at(-1)).toMatchObject({ choices: [], usage });
    expect(chunks.slice(0, -1).every((c) => c.usage === null)).toBe(true);
    expect(final.choices[0]?.message.content).toBe(text);
    expect(final.usage).toEqual(usage);
  });

  it('omits the usage chunk without include_usage', async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-stub',
      messages: userSays('hi'),
      stream: true,
    });
    const chunks: OpenAI.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.at(-1)?.choices[0]?.finish_reason).toBe('stop');
    expect(chunks.every((c) => c.usage === undefined)).toBe(true);
  });

  it('streams a tool call as argument deltas', async () => {
    const stream = client.chat.completions.stream({
      model: 'gpt-stub',
      tools,
      messages: userSays('get_weather city="San Francisco" days=10'),
      stream_options: { include_usage: true },
    });
    const final = await stream.finalChatCompletion();
    const input = { city: 'San Francisco', days: 10 };
    const call = final.choices[0]?.message.tool_calls?.[0];
    expect(final.choices[0]?.finish_reason).toBe('tool_calls');
    expect(call).toMatchObject({ type: 'function', function: { name: 'get_weather' } });
    expect(JSON.parse(call?.type === 'function' ? call.function.arguments : '')).toEqual(input);
    expect(final.usage?.completion_tokens).toBe(Math.ceil(JSON.stringify(input).length / 4));
  });
});

describe('errors', () => {
  const cases = [
    {
      note: 'stub-error-500',
      model: 'stub-error-500',
      apiKey: KEY,
      status: 500,
      type: 'server_error',
      code: null,
    },
    {
      note: 'stub-error-429',
      model: 'stub-error-429',
      apiKey: KEY,
      status: 429,
      type: 'requests',
      code: 'rate_limit_exceeded',
    },
    {
      note: 'wrong API key',
      model: 'gpt-stub',
      apiKey: 'sk-wrong',
      status: 401,
      type: 'invalid_request_error',
      code: 'invalid_api_key',
    },
  ];

  it.each(cases)('$note surfaces as APIError $status', async ({ model, apiKey, status, type, code }) => {
    const other = new OpenAI({ apiKey, baseURL: `${stub.url}/v1`, maxRetries: 0 });
    const error = await other.chat.completions
      .create({ model, messages: userSays('hi') })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect(error).toMatchObject({ status, type, code, param: null, error: { message: expect.any(String) } });
  });

  it('fails a stream before the first chunk with the same error', async () => {
    const stream = client.chat.completions.stream({ model: 'stub-error-429', messages: userSays('hi') });
    await expect(stream.finalChatCompletion()).rejects.toMatchObject({ status: 429 });
  });

  it('stub-reset surfaces as a connection error', async () => {
    const error = await client.chat.completions
      .create({ model: 'stub-reset', messages: userSays('hi') })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.APIConnectionError);
  });
});
