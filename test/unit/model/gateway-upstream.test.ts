import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { describe, expect, it, vi } from 'vitest';
import { BASE_POLICY, REAL_KEY, sdkError, useScriptedUpstream } from './support.ts';

const POLICY = BASE_POLICY.replace(
  'model: { in: [',
  'model: { starts_with: "scripted-" }\n    effect: ALLOW\n  - name: stubs\n    action: model\n    conditions:\n      model: { in: [',
);
const PRICE = {
  input_per_mtok: 3,
  output_per_mtok: 15,
  cache_write_per_mtok: 3.75,
  cache_read_per_mtok: 0.3,
};

const sse = (
  res: ServerResponse,
  events: ReadonlyArray<readonly [string | undefined, unknown]>,
  eol = '\n',
) => {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  for (const [event, data] of events) {
    res.write(
      `${event ? `event: ${event}${eol}` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}${eol}${eol}`,
    );
  }
};
const json = (res: ServerResponse, status: number, body: unknown) => {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'set-cookie': 'cf=1',
  });
  res.end(text);
};

/** A long answer (about 6 MiB), so a slow agent makes the gateway stop reading the upstream and resume. */
function bigAnthropicSse(model: string): string {
  const ev = (type: string, data: unknown) => `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
  const parts = [
    ev('message_start', {
      type: 'message_start',
      message: {
        id: 'msg_big',
        type: 'message',
        role: 'assistant',
        model,
        content: [],
        usage: anthropicUsage,
      },
    }),
    ev('content_block_start', {
      type: 'content_block_start',
      index: 0,
      content_block: { type: 'text', text: '' },
    }),
  ];
  for (let i = 0; i < 1500; i++) {
    const text = `${i} ${'ü'.repeat(2000)}`;
    parts.push(
      ev('content_block_delta', {
        type: 'content_block_delta',
        index: 0,
        delta: { type: 'text_delta', text },
      }),
    );
  }
  parts.push(
    ev('content_block_stop', { type: 'content_block_stop', index: 0 }),
    ev('message_delta', {
      type: 'message_delta',
      delta: { stop_reason: 'end_turn' },
      usage: { output_tokens: 40 },
    }),
    ev('message_stop', { type: 'message_stop' }),
  );
  return parts.join('');
}

function bigAnthropicJson(model: string): string {
  return JSON.stringify({
    id: 'msg_big',
    type: 'message',
    role: 'assistant',
    model,
    content: [{ type: 'text', text: 'ü'.repeat(3_000_000) }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    usage: anthropicUsage,
  });
}

const anthropicUsage = {
  input_tokens: 10,
  cache_creation_input_tokens: 200,
  cache_read_input_tokens: 3000,
  output_tokens: 40,
};
const toolUse = { type: 'tool_use', id: 'toolu_1', name: 'delete_user', input: { id: '7' } };

function answerAnthropic(model: string, req: IncomingMessage, res: ServerResponse): unknown {
  switch (model) {
    case 'scripted-tool-json':
      return json(res, 200, {
        id: 'msg_1',
        type: 'message',
        role: 'assistant',
        model,
        content: [toolUse],
        stop_reason: 'tool_use',
        stop_sequence: null,
        usage: anthropicUsage,
      });
    case 'scripted-tool-sse': {
      const start = { ...anthropicUsage, output_tokens: 1 };
      sse(
        res,
        [
          [
            'message_start',
            {
              type: 'message_start',
              message: {
                id: 'msg_2',
                type: 'message',
                role: 'assistant',
                model,
                content: [],
                stop_reason: null,
                stop_sequence: null,
                usage: start,
              },
            },
          ],
          [
            'content_block_start',
            { type: 'content_block_start', index: 0, content_block: { ...toolUse, input: {} } },
          ],
          [
            'content_block_delta',
            {
              type: 'content_block_delta',
              index: 0,
              delta: { type: 'input_json_delta', partial_json: '{"id":"7"}' },
            },
          ],
          ['content_block_stop', { type: 'content_block_stop', index: 0 }],
          [
            'message_delta',
            {
              type: 'message_delta',
              delta: { stop_reason: 'tool_use', stop_sequence: null },
              usage: { output_tokens: 40 },
            },
          ],
          ['message_stop', { type: 'message_stop' }],
        ],
        '\r\n',
      );
      return res.end();
    }
    case 'scripted-cut':
      sse(res, [
        [
          'message_start',
          {
            type: 'message_start',
            message: {
              id: 'msg_3',
              type: 'message',
              role: 'assistant',
              model,
              content: [],
              stop_reason: null,
              stop_sequence: null,
              usage: { input_tokens: 5, output_tokens: 1 },
            },
          },
        ],
      ]);
      // Half an event, then the connection drops.
      res.write('event: content_block_start\ndata: {"type":"content_');
      setTimeout(() => res.socket?.destroy(), 20);
      return;
    case 'scripted-big-sse': {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      // Written in pieces that cut events and characters apart.
      const bytes = Buffer.from(bigAnthropicSse(model));
      for (let i = 0; i < bytes.length; i += 50_001) res.write(bytes.subarray(i, i + 50_001));
      return res.end();
    }
    case 'scripted-big-json': {
      const bytes = Buffer.from(bigAnthropicJson(model));
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': bytes.length });
      return res.end(bytes);
    }
    case 'scripted-401':
      return json(res, 401, {
        type: 'error',
        error: { type: 'authentication_error', message: `invalid x-api-key ${req.headers['x-api-key']}` },
      });
    case 'scripted-echo-key':
      return json(res, 400, {
        type: 'error',
        error: { type: 'invalid_request_error', message: `bad request from ${req.headers['x-api-key']}` },
      });
    default:
      return json(res, 404, { type: 'error', error: { type: 'not_found_error', message: 'no such script' } });
  }
}

function answerOpenAI(model: string, res: ServerResponse): unknown {
  const head = { id: 'chatcmpl-1', created: 1, model };
  const usage = {
    prompt_tokens: 1000,
    completion_tokens: 50,
    total_tokens: 1050,
    prompt_tokens_details: { cached_tokens: 800 },
  };
  const call = { index: 0, id: 'call_1', type: 'function', function: { name: 'delete_user', arguments: '' } };
  if (model === 'scripted-tool-json') {
    return json(res, 200, {
      ...head,
      object: 'chat.completion',
      choices: [
        {
          index: 0,
          finish_reason: 'tool_calls',
          logprobs: null,
          message: {
            role: 'assistant',
            content: null,
            refusal: null,
            tool_calls: [{ ...call, function: { name: 'delete_user', arguments: '{"id":"7"}' } }],
          },
        },
      ],
      usage,
    });
  }
  const chunk = (delta: unknown, finish: string | null) => ({
    ...head,
    object: 'chat.completion.chunk',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    usage: null,
  });
  sse(res, [
    [undefined, chunk({ role: 'assistant', content: null, tool_calls: [call] }, null)],
    [undefined, chunk({ tool_calls: [{ index: 0, function: { arguments: '{"id":"7"}' } }] }, null)],
    [undefined, chunk({}, 'tool_calls')],
    [undefined, { ...head, object: 'chat.completion.chunk', choices: [], usage }],
    [undefined, '[DONE]'],
  ]);
  res.end();
}

const scripted = useScriptedUpstream(
  (model, req, res) => {
    if (req.url === '/v1/messages') answerAnthropic(model, req, res);
    else answerOpenAI(model, res);
  },
  { policy: POLICY, config: { prices: { 'scripted-*': PRICE } } },
);

const anomalies = async () => (await scripted.gw.audit()).filter((e) => e.reason === 'model_tool_anomaly');

describe('forbidden tool calls in answers', () => {
  it.each(['scripted-tool-json', 'scripted-tool-sse'])(
    '%s (Anthropic): the answer passes, and an anomaly is audited',
    async (model) => {
      const before = (await anomalies()).length;
      const client = scripted.gw.anthropic();
      if (model.endsWith('sse')) {
        const stream = await client.messages.create({
          model,
          max_tokens: 64,
          stream: true,
          messages: [{ role: 'user', content: 'x' }],
        });
        const names: string[] = [];
        for await (const ev of stream)
          if (ev.type === 'content_block_start' && ev.content_block.type === 'tool_use')
            names.push(ev.content_block.name);
        expect(names).toEqual(['delete_user']);
      } else {
        const message = await client.messages.create({
          model,
          max_tokens: 64,
          messages: [{ role: 'user', content: 'x' }],
        });
        expect(message.content[0]).toMatchObject({ type: 'tool_use', name: 'delete_user' });
      }
      const added = (await anomalies()).slice(before);
      expect(added).toHaveLength(1);
      expect(added[0]).toMatchObject({
        kind: 'model',
        effect: 'DENY',
        action: { type: 'tool_call', tool: 'delete_user' },
        extra: { anomaly: 'model_requested_forbidden_tool', model, provider: 'anthropic' },
      });
    },
  );

  it.each([false, true])(
    'OpenAI (stream: %s): the answer passes, and an anomaly is audited',
    async (stream) => {
      const before = (await anomalies()).length;
      const client = scripted.gw.openai();
      const messages = [{ role: 'user' as const, content: 'x' }];
      if (stream) {
        const s = await client.chat.completions.create({
          model: 'scripted-tool-sse',
          stream: true,
          messages,
        });
        let name = '';
        for await (const chunk of s) name += chunk.choices[0]?.delta.tool_calls?.[0]?.function?.name ?? '';
        expect(name).toBe('delete_user');
      } else {
        const c = await client.chat.completions.create({ model: 'scripted-tool-json', messages });
        expect(c.choices[0]?.message.tool_calls?.[0]).toMatchObject({ function: { name: 'delete_user' } });
      }
      expect((await anomalies()).slice(before)).toHaveLength(1);
    },
  );
});

describe('usage with cache tokens', () => {
  const cost = (u: typeof anthropicUsage) =>
    (u.input_tokens * 3 +
      u.output_tokens * 15 +
      u.cache_creation_input_tokens * 3.75 +
      u.cache_read_input_tokens * 0.3) /
    1e6;

  it.each(['scripted-tool-json', 'scripted-tool-sse'])(
    '%s: cache reads and writes are counted and priced',
    async (model) => {
      const before = scripted.gw.gateway.spend().models[model];
      const params = { model, max_tokens: 64, messages: [{ role: 'user' as const, content: 'x' }] };
      if (model.endsWith('sse')) {
        for await (const _ of await scripted.gw.anthropic().messages.create({ ...params, stream: true }));
      } else {
        expect((await scripted.gw.anthropic().messages.create(params)).usage).toMatchObject(anthropicUsage);
      }
      const after = scripted.gw.gateway.spend().models[model];
      expect((after?.cache_read_input_tokens ?? 0) - (before?.cache_read_input_tokens ?? 0)).toBe(3000);
      expect((after?.cache_creation_input_tokens ?? 0) - (before?.cache_creation_input_tokens ?? 0)).toBe(
        200,
      );
      expect((after?.output_tokens ?? 0) - (before?.output_tokens ?? 0)).toBe(40);
      expect((after?.cost_usd ?? 0) - (before?.cost_usd ?? 0)).toBeCloseTo(cost(anthropicUsage), 12);
    },
  );

  it('splits OpenAI cached prompt tokens out of prompt_tokens', async () => {
    const before = scripted.gw.gateway.spend().models['scripted-tool-sse'];
    const s = await scripted.gw.openai().chat.completions.create({
      model: 'scripted-tool-sse',
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    for await (const _ of s);
    const after = scripted.gw.gateway.spend().models['scripted-tool-sse'];
    expect((after?.input_tokens ?? 0) - (before?.input_tokens ?? 0)).toBe(200);
    expect((after?.cache_read_input_tokens ?? 0) - (before?.cache_read_input_tokens ?? 0)).toBe(800);
  });
});

describe('large answers to a slow agent', () => {
  it.each([
    ['scripted-big-sse', true, bigAnthropicSse],
    ['scripted-big-json', false, bigAnthropicJson],
  ] as const)('%s: every byte arrives unchanged, and usage is settled', async (model, stream, expected) => {
    const res = await request(`${scripted.gw.url}/anthropic/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model, max_tokens: 64, stream, messages: [{ role: 'user', content: 'x' }] }),
    });
    expect(res.statusCode).toBe(200);
    // Far more than the socket buffers hold: the gateway has to wait for the agent.
    await sleep(200);
    const got = Buffer.from(await res.body.arrayBuffer());
    expect(got.equals(Buffer.from(expected(model)))).toBe(true);
    const id = res.headers['x-sidecar-decision-id'];
    await vi.waitFor(() =>
      expect(scripted.gw.logs.find((l) => l['decision_id'] === id && l['msg'] === 'decision')).toMatchObject({
        status: 200,
        settlement: 'usage',
        usage: { output_tokens: 40, cache_read_input_tokens: 3000 },
      }),
    );
  });
});

describe('upstream misbehaviour', () => {
  it('ends a stream cut mid-way with an error event the SDK raises, and charges the reservation', async () => {
    const stream = await scripted.gw.anthropic().messages.create({
      model: 'scripted-cut',
      max_tokens: 64,
      stream: true,
      messages: [{ role: 'user', content: 'x' }],
    });
    const seen: string[] = [];
    const err = await sdkError(
      (async () => {
        for await (const ev of stream) seen.push(ev.type);
      })(),
    );
    expect(seen).toEqual(['message_start']);
    expect(err.message).toContain('SIDECAR_ERR_UPSTREAM_UNREACHABLE');
    expect(
      scripted.gw.logs.some((l) => l['model'] === 'scripted-cut' && l['settlement'] === 'charge_reserved'),
    ).toBe(true);
  });

  it('turns a vendor 401 (the sidecar key refused) into a 502 that quotes nothing', async () => {
    const err = await sdkError(
      scripted.gw.anthropic().messages.create({
        model: 'scripted-401',
        max_tokens: 8,
        messages: [{ role: 'user', content: 'x' }],
      }),
    );
    expect(err.status).toBe(502);
    expect(JSON.stringify(err.error)).not.toContain(REAL_KEY);
    expect(err.headers?.get('x-should-retry')).toBe('false');
  });

  it('scrubs the key from a vendor error body that quotes it, and drops upstream cookies', async () => {
    const res = await fetch(`${scripted.gw.url}/anthropic/v1/messages`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({
        model: 'scripted-echo-key',
        max_tokens: 8,
        messages: [{ role: 'user', content: 'x' }],
      }),
    });
    const text = await res.text();
    expect(res.status).toBe(400);
    expect(text).not.toContain(REAL_KEY);
    expect(text).toContain('[REDACTED]');
    expect(res.headers.get('set-cookie')).toBeNull();
  });
});
