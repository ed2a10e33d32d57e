// The gateway on /openai, driven by the openai SDK: keys, policy, tool filtering and usage, streamed or not.
import type OpenAI from 'openai';
import type { ChatCompletionChunk, ChatCompletionTool } from 'openai/resources/chat/completions';
import { describe, expect, it } from 'vitest';
import { countInputTokens, type ModelStub } from '../../../agents/model-stub/server.ts';
import {
  AGENT_KEY,
  type GatewayUnderTest,
  modelEntries,
  REAL_KEY,
  sdkError,
  startGateway,
  useStubGateway,
} from './support.ts';

const fn = (name: string, prop: string): ChatCompletionTool => ({
  type: 'function',
  function: { name, parameters: { type: 'object', properties: { [prop]: { type: 'string' } } } },
});
const tools = [fn('query_knowledge_base', 'q'), fn('delete_user', 'id'), fn('submit_ticket', 'priority')];
const say = (content: string): OpenAI.ChatCompletionMessageParam[] => [{ role: 'user', content }];

let stub: ModelStub;
let gw: GatewayUnderTest;
let client: OpenAI;

useStubGateway({}, (s, g) => {
  stub = s;
  gw = g;
  client = g.openai();
});

const toolNames = (body: unknown) =>
  ((body as { tools?: ChatCompletionTool[] }).tools ?? []).map((t) =>
    t.type === 'function' ? t.function.name : '',
  );

describe('keys', () => {
  it("sends the sidecar's key as the bearer token, never the agent's, and never echoes it", async () => {
    const completion = await client.chat.completions.create({ model: 'stub-small', messages: say('hello') });
    expect(completion.choices[0]?.message.content).toBe('Stub reply: hello');
    const headers = stub.requests[0]?.headers ?? {};
    expect(headers['authorization']).toBe(`Bearer ${REAL_KEY}`);
    expect(JSON.stringify(headers)).not.toContain(AGENT_KEY);

    const raw = await fetch(`${gw.url}/openai/v1/chat/completions`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        authorization: `Bearer ${AGENT_KEY}`,
        'api-key': AGENT_KEY,
        'openai-organization': 'org-agent-picked',
      },
      body: JSON.stringify({ model: 'stub-small', messages: say('hi') }),
    });
    const text = await raw.text();
    expect(raw.status).toBe(200);
    expect(JSON.stringify([...raw.headers]) + text).not.toContain(REAL_KEY);
    const seen = stub.requests[1]?.headers ?? {};
    expect(JSON.stringify(seen)).not.toContain(AGENT_KEY);
    expect(seen['openai-organization']).toBeUndefined();
    expect(await gw.auditText()).not.toContain(REAL_KEY);
    expect(gw.logText()).not.toContain(REAL_KEY);
  });
});

describe('policy', () => {
  it('refuses a model the policy does not allow, in the OpenAI error format, without calling upstream', async () => {
    const err = await sdkError(client.chat.completions.create({ model: 'gpt-4o', messages: say('x') }));
    expect(err.status).toBe(403);
    expect(err.error).toMatchObject({
      type: 'permission_error',
      code: 'SIDECAR_ERR_POLICY_DENIED',
      param: null,
    });
    const id = err.headers?.get('x-sidecar-decision-id');
    expect((err.error as { message: string }).message).toContain(id);
    expect(err.headers?.get('x-should-retry')).toBe('false');
    expect(stub.requests).toHaveLength(0);
    const entry = modelEntries(await gw.audit()).find((e) => e.decision_id === id);
    expect(entry).toMatchObject({
      effect: 'DENY',
      action: { type: 'model', model: 'gpt-4o' },
      extra: { provider: 'openai' },
    });
  });
});

describe('tools', () => {
  it('strips tools the policy never allows', async () => {
    const completion = await client.chat.completions.create({
      model: 'stub-small',
      tools,
      messages: say('delete_user id=1'),
    });
    expect(completion.choices[0]?.message.tool_calls).toBeUndefined();
    expect(toolNames(stub.requests[0]?.body)).toEqual(['query_knowledge_base', 'submit_ticket']);
  });

  it('drops tool_choice and parallel_tool_calls when no tool is left', async () => {
    await client.chat.completions.create({
      model: 'stub-small',
      tools: [fn('delete_user', 'id')],
      tool_choice: 'auto',
      parallel_tool_calls: false,
      messages: say('hi'),
    });
    const body = stub.requests[0]?.body as Record<string, unknown>;
    expect(body['tools']).toBeUndefined();
    expect(body['tool_choice']).toBeUndefined();
    expect(body['parallel_tool_calls']).toBeUndefined();
  });

  it.each([
    ['a named function', { type: 'function', function: { name: 'delete_user' } }, tools],
    ['required, with only removed tools offered', 'required', [fn('delete_user', 'id')]],
  ] as const)(
    'refuses a tool_choice forcing a removed tool (%s) with a 400',
    async (_name, toolChoice, offered) => {
      const err = await sdkError(
        client.chat.completions.create({
          model: 'stub-small',
          tools: [...offered],
          tool_choice: toolChoice as OpenAI.ChatCompletionToolChoiceOption,
          messages: say('x'),
        }),
      );
      expect(err.status).toBe(400);
      expect(err.error).toMatchObject({
        type: 'invalid_request_error',
        code: 'SIDECAR_ERR_REQUEST_MALFORMED',
      });
      expect(stub.requests).toHaveLength(0);
    },
  );

  it('refuses a request offering a forbidden tool when tools_mode is reject', async () => {
    const strict = await startGateway(stub.url, { config: { tools_mode: 'reject' } });
    try {
      const err = await sdkError(
        strict.openai().chat.completions.create({ model: 'stub-small', tools, messages: say('x') }),
      );
      expect(err.status).toBe(403);
      expect(stub.requests).toHaveLength(0);
      const ok = await strict.openai().chat.completions.create({
        model: 'stub-small',
        tools: [fn('query_knowledge_base', 'q')],
        messages: say('x'),
      });
      expect(ok.choices).toHaveLength(1);
    } finally {
      await strict.close();
    }
  });
});

describe('usage', () => {
  it('reads usage from a non-streamed answer', async () => {
    const before = gw.gateway.spend().models['stub-small'];
    const completion = await client.chat.completions.create({
      model: 'stub-small',
      messages: say('count me'),
    });
    const after = gw.gateway.spend().models['stub-small'];
    expect(completion.usage?.prompt_tokens).toBe(countInputTokens(stub.requests[0]?.body));
    expect((after?.input_tokens ?? 0) - (before?.input_tokens ?? 0)).toBe(completion.usage?.prompt_tokens);
    expect((after?.output_tokens ?? 0) - (before?.output_tokens ?? 0)).toBe(
      completion.usage?.completion_tokens,
    );
  });

  it('asks for the usage chunk on a stream and keeps it from an agent that did not ask', async () => {
    const before = gw.gateway.spend().models['stub-small'];
    const stream = await client.chat.completions.create({
      model: 'stub-small',
      stream: true,
      messages: say('stream me'),
    });
    const chunks: ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.length).toBeGreaterThan(2);
    // The usage-only chunk (choices: []) the gateway added is not delivered.
    expect(chunks.every((c) => c.choices.length > 0)).toBe(true);
    expect((stub.requests[0]?.body as { stream_options?: unknown } | undefined)?.stream_options).toEqual({
      include_usage: true,
    });
    const after = gw.gateway.spend().models['stub-small'];
    expect((after?.input_tokens ?? 0) - (before?.input_tokens ?? 0)).toBe(
      countInputTokens(stub.requests[0]?.body),
    );
    expect((after?.output_tokens ?? 0) - (before?.output_tokens ?? 0)).toBeGreaterThan(0);
  });

  it('delivers the usage chunk to an agent that asked for it', async () => {
    const stream = await client.chat.completions.create({
      model: 'stub-small',
      stream: true,
      stream_options: { include_usage: true },
      messages: say('stream me'),
    });
    const chunks: ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    const last = chunks.at(-1);
    expect(last?.choices).toEqual([]);
    expect(last?.usage?.prompt_tokens).toBe(countInputTokens(stub.requests[0]?.body));
  });

  it('records streamed tool calls the policy allows without an anomaly', async () => {
    const entriesBefore = (await gw.audit()).length;
    const stream = await client.chat.completions.create({
      model: 'stub-small',
      stream: true,
      tools,
      messages: say('query_knowledge_base q=refunds'),
    });
    let name = '';
    for await (const chunk of stream) name += chunk.choices[0]?.delta.tool_calls?.[0]?.function?.name ?? '';
    expect(name).toBe('query_knowledge_base');
    const added = (await gw.audit()).slice(entriesBefore);
    expect(added.map((e) => e.reason)).not.toContain('model_tool_anomaly');
  });
});
