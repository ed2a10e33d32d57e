// The gateway on /anthropic, driven by @anthropic-ai/sdk: keys, policy, tool filtering and usage, streamed or not.
import type Anthropic from '@anthropic-ai/sdk';
import { describe, expect, it, vi } from 'vitest';
import { countInputTokens, type ModelStub } from '../../../agents/model-stub/server.ts';
import type { AuditEntry } from '../../../sidecar/audit/entry.ts';
import type { DecisionRequest } from '../../../sidecar/server/enforcer-types.ts';
import {
  AGENT_KEY,
  type GatewayUnderTest,
  modelEntries,
  REAL_KEY,
  sdkError,
  startGateway,
  useStubGateway,
} from './support.ts';

const tools: Anthropic.Tool[] = [
  { name: 'query_knowledge_base', input_schema: { type: 'object', properties: { q: { type: 'string' } } } },
  { name: 'delete_user', input_schema: { type: 'object', properties: { id: { type: 'string' } } } },
  { name: 'submit_ticket', input_schema: { type: 'object', properties: { priority: { type: 'string' } } } },
];

let stub: ModelStub;
let gw: GatewayUnderTest;
let client: Anthropic;

useStubGateway({}, (s, g) => {
  stub = s;
  gw = g;
  client = g.anthropic();
});

describe('keys', () => {
  it("replaces the agent's credentials with the sidecar's key and never echoes it", async () => {
    const message = await client.messages.create({
      model: 'stub-small',
      max_tokens: 64,
      messages: [{ role: 'user', content: 'hello' }],
    });
    expect(message.content).toEqual([{ type: 'text', text: 'Stub reply: hello' }]);
    expect(stub.requests).toHaveLength(1);
    const headers = stub.requests[0]?.headers ?? {};
    expect(headers['x-api-key']).toBe(REAL_KEY);
    // @anthropic-ai/sdk 1.x sends its key as a bearer token: it must be gone, not just outvoted.
    expect(headers['authorization']).toBeUndefined();
    expect(JSON.stringify(headers)).not.toContain(AGENT_KEY);

    const raw = await fetch(`${gw.url}/anthropic/v1/messages`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'anthropic-version': '2023-06-01',
        'x-api-key': AGENT_KEY,
        authorization: `Bearer ${AGENT_KEY}`,
        'proxy-authorization': `Basic ${AGENT_KEY}`,
        cookie: `session=${AGENT_KEY}`,
        'x-auth-token': AGENT_KEY,
      },
      body: JSON.stringify({
        model: 'stub-small',
        max_tokens: 8,
        messages: [{ role: 'user', content: 'hi' }],
      }),
    });
    const text = await raw.text();
    expect(raw.status).toBe(200);
    expect(JSON.stringify([...raw.headers]) + text).not.toContain(REAL_KEY);
    expect(JSON.stringify(stub.requests[1]?.headers)).not.toContain(AGENT_KEY);
    expect(raw.headers.get('x-sidecar-decision-id')).toMatch(/^[0-9a-f-]{36}$/);

    expect(await gw.auditText()).not.toContain(REAL_KEY);
    expect(gw.logText()).not.toContain(REAL_KEY);
  });
});

describe('policy', () => {
  it('refuses a model the policy does not allow, in the Anthropic error format, without calling upstream', async () => {
    const err = await sdkError(
      client.messages.create({
        model: 'claude-opus-4-1',
        max_tokens: 8,
        messages: [{ role: 'user', content: 'x' }],
      }),
    );
    expect(err.status).toBe(403);
    expect(err.error).toMatchObject({ type: 'error', error: { type: 'permission_error' } });
    expect(err.message).toContain('SIDECAR_ERR_POLICY_DENIED');
    const decisionId = err.headers?.get('x-sidecar-decision-id');
    expect(decisionId).toBeTruthy();
    expect(err.message).toContain(decisionId);
    // The refusal names no rule and no model.
    expect(err.message).not.toContain('small-models');
    expect(err.message).not.toContain('claude-opus');
    expect(stub.requests).toHaveLength(0);
    const entry = modelEntries(await gw.audit()).find((e) => e.decision_id === decisionId);
    expect(entry).toMatchObject({
      effect: 'DENY',
      action: { type: 'model', model: 'claude-opus-4-1' },
      extra: { provider: 'anthropic', stream: false },
    });
  });

  it('audits an allowed call before forwarding, with the tools before and after filtering', async () => {
    const res = await client.messages
      .create({ model: 'stub-small', max_tokens: 64, tools, messages: [{ role: 'user', content: 'hello' }] })
      .withResponse();
    const id = res.response.headers.get('x-sidecar-decision-id');
    const entry = modelEntries(await gw.audit()).find((e) => e.decision_id === id);
    expect(entry).toMatchObject({
      effect: 'ALLOW',
      rule: 'small-models',
      action: { type: 'model', model: 'stub-small' },
      extra: {
        provider: 'anthropic',
        stream: false,
        tools_before: ['query_knowledge_base', 'delete_user', 'submit_ticket'],
        tools_after: ['query_knowledge_base', 'submit_ticket'],
      },
    });
    // No prompt content in the audit log.
    expect(JSON.stringify(entry)).not.toContain('hello');
  });
});

describe('tools', () => {
  it('strips tools the policy never allows before the model sees them', async () => {
    const message = await client.messages.create({
      model: 'stub-small',
      max_tokens: 64,
      tools,
      messages: [{ role: 'user', content: 'please delete_user id=7' }],
    });
    // The stub calls a tool the text names only when it was offered: it was not.
    expect(message.content[0]?.type).toBe('text');
    const sent = stub.requests[0]?.body as { tools: Array<{ name: string }> };
    expect(sent.tools.map((t) => t.name)).toEqual(['query_knowledge_base', 'submit_ticket']);
    expect(message.usage.input_tokens).toBe(countInputTokens(sent));
  });

  it('refuses a tool_choice that forces a removed tool with a 400, without calling upstream', async () => {
    const err = await sdkError(
      client.messages.create({
        model: 'stub-small',
        max_tokens: 64,
        tools,
        tool_choice: { type: 'tool', name: 'delete_user' },
        messages: [{ role: 'user', content: 'x' }],
      }),
    );
    expect(err.status).toBe(400);
    expect(err.error).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    expect(err.message).not.toContain('delete_user');
    expect(stub.requests).toHaveLength(0);
    const id = err.headers?.get('x-sidecar-decision-id');
    const entry = (await gw.audit()).find((e) => e.decision_id === id);
    expect(entry).toMatchObject({ effect: 'DENY', reason: 'tool_choice_forbidden_tool' });
  });

  it('forwards a tool_choice that forces an allowed tool', async () => {
    const message = await client.messages.create({
      model: 'stub-small',
      max_tokens: 64,
      tools,
      tool_choice: { type: 'tool', name: 'query_knowledge_base' },
      messages: [{ role: 'user', content: 'q=refunds' }],
    });
    expect(message.content[0]).toMatchObject({
      type: 'tool_use',
      name: 'query_knowledge_base',
      input: { q: 'refunds' },
    });
  });
});

describe('usage', () => {
  it('reads usage from a non-streamed answer', async () => {
    const before = gw.gateway.spend().models['stub-small'];
    const message = await client.messages.create({
      model: 'stub-small',
      max_tokens: 64,
      system: 'Be brief.',
      messages: [{ role: 'user', content: 'count me' }],
    });
    const after = gw.gateway.spend().models['stub-small'];
    expect(message.usage.input_tokens).toBe(countInputTokens(stub.requests[0]?.body));
    expect((after?.input_tokens ?? 0) - (before?.input_tokens ?? 0)).toBe(message.usage.input_tokens);
    expect((after?.output_tokens ?? 0) - (before?.output_tokens ?? 0)).toBe(message.usage.output_tokens);
    expect((after?.requests ?? 0) - (before?.requests ?? 0)).toBe(1);
    const cost = (message.usage.input_tokens * 1 + message.usage.output_tokens * 5) / 1e6;
    expect((after?.cost_usd ?? 0) - (before?.cost_usd ?? 0)).toBeCloseTo(cost, 12);
  });

  it('reads usage from message_start and message_delta of a stream, passing every event through', async () => {
    const before = gw.gateway.spend().models['stub-small'];
    const stream = await client.messages.create({
      model: 'stub-small',
      max_tokens: 64,
      stream: true,
      messages: [{ role: 'user', content: 'stream me please' }],
    });
    const types: string[] = [];
    let output = 0;
    let input = 0;
    for await (const event of stream) {
      types.push(event.type);
      if (event.type === 'message_start') input = event.message.usage.input_tokens;
      if (event.type === 'message_delta') output = event.usage.output_tokens;
    }
    expect(types[0]).toBe('message_start');
    expect(types.at(-1)).toBe('message_stop');
    expect(types).toContain('message_delta');
    const after = gw.gateway.spend().models['stub-small'];
    expect((after?.input_tokens ?? 0) - (before?.input_tokens ?? 0)).toBe(input);
    expect((after?.output_tokens ?? 0) - (before?.output_tokens ?? 0)).toBe(output);
    expect(output).toBeGreaterThan(1);
  });

  it('writes one canonical log line per call with usage and cost, and no prompt', async () => {
    const res = await client.messages
      .create({ model: 'stub-small', max_tokens: 64, messages: [{ role: 'user', content: 'secret plans' }] })
      .withResponse();
    const id = res.response.headers.get('x-sidecar-decision-id');
    // The line is written once the call is settled and its usage audited, which may trail the response.
    const lines = await vi.waitFor(() => {
      const found = gw.logs.filter((l) => l['decision_id'] === id && l['msg'] === 'decision');
      expect(found).toHaveLength(1);
      return found;
    });
    expect(lines[0]).toMatchObject({
      kind: 'model',
      provider: 'anthropic',
      model: 'stub-small',
      effect: 'ALLOW',
      status: 200,
      usage: { input_tokens: res.data.usage.input_tokens, output_tokens: res.data.usage.output_tokens },
      settlement: 'usage',
    });
    expect(gw.logText()).not.toContain('secret plans');
  });
});

describe('usage audit entry', () => {
  it('writes one model_usage record per forwarded call when the enforcer can record facts', async () => {
    const records: Array<{ req: DecisionRequest; reason: string }> = [];
    const recording = await startGateway(stub.url, { records });
    try {
      const res = await recording
        .anthropic()
        .messages.create({ model: 'stub-small', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] })
        .withResponse();
      // The record waits for the next decision's audit write, or USAGE_RECORD_DELAY_MS.
      await vi.waitFor(() => expect(records).toHaveLength(1));
      expect(records[0]).toMatchObject({
        reason: 'model_usage',
        req: {
          kind: 'model',
          action: { type: 'model', model: 'stub-small' },
          extra: {
            provider: 'anthropic',
            request: res.response.headers.get('x-sidecar-decision-id'),
            status: 200,
            usage: { input_tokens: res.data.usage.input_tokens, output_tokens: res.data.usage.output_tokens },
            settlement: 'usage',
          },
        },
      });
      // A refused call was never forwarded: nothing to record.
      await sdkError(
        recording
          .anthropic()
          .messages.create({ model: 'gpt-4o', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }),
      );
      expect(records).toHaveLength(1);
    } finally {
      await recording.close();
    }
  });
});

describe('usage audit entry in the chain', () => {
  const usageOf = (entries: readonly AuditEntry[], id: string | null) =>
    entries.find((e) => e.reason === 'model_usage' && e.extra?.['request'] === id);

  it('goes ahead of the next decision, or out on its own soon after', async () => {
    const params = {
      model: 'stub-small',
      max_tokens: 8,
      messages: [{ role: 'user' as const, content: 'a' }],
    };
    const first = await gw.anthropic().messages.create(params).withResponse();
    const second = await gw.anthropic().messages.create(params).withResponse();
    const firstId = first.response.headers.get('x-sidecar-decision-id');
    const secondId = second.response.headers.get('x-sidecar-decision-id');
    const entries = await gw.audit();
    const record = usageOf(entries, firstId);
    const decision = entries.find((e) => e.decision_id === secondId);
    expect(record).toMatchObject({
      kind: 'model',
      effect: null,
      extra: { status: 200, settlement: 'usage' },
    });
    expect(record?.seq).toBeLessThan(decision?.seq ?? 0);
    await vi.waitFor(async () => expect(usageOf(await gw.audit(), secondId)).toBeDefined());
  });

  it('is written before the audit chain closes at shutdown', async () => {
    const own = await startGateway(stub.url);
    const res = await own
      .anthropic()
      .messages.create({ model: 'stub-small', max_tokens: 8, messages: [{ role: 'user', content: 'b' }] })
      .withResponse();
    await own.close();
    const id = res.response.headers.get('x-sidecar-decision-id');
    expect(usageOf(await own.audit(), id)).toMatchObject({ effect: null, extra: { status: 200 } });
  });
});

describe('routes', () => {
  it.each([
    ['GET', '/anthropic/v1/messages', 405],
    ['POST', '/anthropic/v1/models', 404],
    ['POST', '/anthropic/v1/messages/count_tokens', 404],
    ['POST', '/anthropic', 404],
  ])('%s %s answers %i in the Anthropic error format', async (method, path, status) => {
    const res = await fetch(`${gw.url}${path}`, { method, ...(method === 'POST' ? { body: '{}' } : {}) });
    expect(res.status).toBe(status);
    expect(await res.json()).toMatchObject({
      type: 'error',
      error: { type: expect.any(String), message: expect.any(String) },
    });
    expect(stub.requests).toHaveLength(0);
  });

  it('refuses a body with duplicate keys (a parser differential) as malformed, audited', async () => {
    const res = await fetch(`${gw.url}/anthropic/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: '{"model":"stub-small","model":"claude-opus-4-1","max_tokens":8,"messages":[{"role":"user","content":"x"}]}',
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
    expect(stub.requests).toHaveLength(0);
    const entry = (await gw.audit()).find((e) => e.decision_id === res.headers.get('x-sidecar-decision-id'));
    expect(entry).toMatchObject({ kind: 'model', effect: 'DENY', reason: 'malformed_action' });
  });
});
