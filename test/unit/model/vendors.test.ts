// The vendor adapters as tables: tool filtering and tool_choice, output limits, usage from JSON and from streams.
import { describe, expect, it } from 'vitest';
import { anthropic } from '../../../sidecar/model/anthropic.ts';
import { openai } from '../../../sidecar/model/openai.ts';
import type { SseEvent } from '../../../sidecar/model/sse.ts';
import type { JsonObject, ToolsMode, VendorAdapter } from '../../../sidecar/model/vendor.ts';

const ALLOWED = new Set(['kb', 'ticket']);
const mayExpose = (name: string) => ALLOWED.has(name);

const aTool = (name: string) => ({ name, input_schema: { type: 'object' } });
const oTool = (name: string) => ({ type: 'function', function: { name, parameters: { type: 'object' } } });

interface FilterCase {
  readonly note: string;
  readonly vendor: VendorAdapter;
  readonly body: JsonObject;
  readonly mode?: ToolsMode;
  readonly refusal?: string;
  readonly after?: string[];
  /** Fields of the forwarded body (undefined: the body is forwarded unchanged). */
  readonly sent?: JsonObject;
}

const FILTER_CASES: readonly FilterCase[] = [
  { note: 'anthropic: nothing to remove', vendor: anthropic, body: { tools: [aTool('kb')] }, after: ['kb'] },
  {
    note: 'anthropic: a forbidden tool is stripped',
    vendor: anthropic,
    body: { tools: [aTool('kb'), aTool('rm')] },
    after: ['kb'],
    sent: { tools: [aTool('kb')] },
  },
  {
    note: 'anthropic: server tools are judged by name too',
    vendor: anthropic,
    body: { tools: [{ type: 'web_search_20250305', name: 'web_search' }, aTool('kb')] },
    after: ['kb'],
    sent: { tools: [aTool('kb')] },
  },
  {
    note: 'anthropic: an unnamed tool is stripped',
    vendor: anthropic,
    body: { tools: [{ input_schema: {} }, aTool('kb')] },
    after: ['kb'],
    sent: { tools: [aTool('kb')] },
  },
  {
    note: 'anthropic: all stripped, tool_choice auto goes too',
    vendor: anthropic,
    body: { tools: [aTool('rm')], tool_choice: { type: 'auto' } },
    after: [],
    sent: { tools: undefined, tool_choice: undefined },
  },
  {
    note: 'anthropic: tool_choice forcing a stripped tool',
    vendor: anthropic,
    body: { tools: [aTool('kb'), aTool('rm')], tool_choice: { type: 'tool', name: 'rm' } },
    refusal: 'tool_choice_forbidden_tool',
  },
  {
    note: 'anthropic: tool_choice forcing a tool never offered and never allowed',
    vendor: anthropic,
    body: { tools: [aTool('kb')], tool_choice: { type: 'tool', name: 'rm' } },
    refusal: 'tool_choice_forbidden_tool',
  },
  {
    note: 'anthropic: tool_choice any with only forbidden tools',
    vendor: anthropic,
    body: { tools: [aTool('rm')], tool_choice: { type: 'any' } },
    refusal: 'tool_choice_forbidden_tool',
  },
  {
    note: 'anthropic: tool_choice any with an allowed tool left',
    vendor: anthropic,
    body: { tools: [aTool('rm'), aTool('kb')], tool_choice: { type: 'any' } },
    after: ['kb'],
    sent: { tools: [aTool('kb')], tool_choice: { type: 'any' } },
  },
  {
    note: 'anthropic: remote MCP servers never pass',
    vendor: anthropic,
    body: { mcp_servers: [{ type: 'url', url: 'https://mcp.example', name: 'ex' }] },
    after: [],
    sent: { mcp_servers: undefined },
  },
  {
    note: 'anthropic: reject mode',
    vendor: anthropic,
    mode: 'reject',
    body: { tools: [aTool('kb'), aTool('rm')] },
    refusal: 'tools_forbidden',
  },
  { note: 'openai: nothing to remove', vendor: openai, body: { tools: [oTool('kb')] }, after: ['kb'] },
  {
    note: 'openai: stripped, tool_choice and parallel_tool_calls dropped with the last tool',
    vendor: openai,
    body: { tools: [oTool('rm')], tool_choice: 'auto', parallel_tool_calls: true },
    after: [],
    sent: { tools: undefined, tool_choice: undefined, parallel_tool_calls: undefined },
  },
  {
    note: 'openai: custom tools are judged by name',
    vendor: openai,
    body: {
      tools: [
        { type: 'custom', custom: { name: 'rm' } },
        { type: 'custom', custom: { name: 'kb' } },
      ],
    },
    after: ['kb'],
    sent: { tools: [{ type: 'custom', custom: { name: 'kb' } }] },
  },
  {
    note: 'openai: a tool of an unknown type is stripped',
    vendor: openai,
    body: { tools: [{ type: 'future_tool', future_tool: { name: 'kb' } }, oTool('kb')] },
    after: ['kb'],
    sent: { tools: [oTool('kb')] },
  },
  {
    note: 'openai: named function choice forcing a stripped tool',
    vendor: openai,
    body: { tools: [oTool('kb'), oTool('rm')], tool_choice: { type: 'function', function: { name: 'rm' } } },
    refusal: 'tool_choice_forbidden_tool',
  },
  {
    note: 'openai: required with only forbidden tools',
    vendor: openai,
    body: { tools: [oTool('rm')], tool_choice: 'required' },
    refusal: 'tool_choice_forbidden_tool',
  },
  {
    note: 'openai: allowed_tools narrowed to what may be exposed',
    vendor: openai,
    body: {
      tools: [oTool('kb'), oTool('rm')],
      tool_choice: {
        type: 'allowed_tools',
        allowed_tools: { mode: 'required', tools: [oTool('kb'), oTool('rm')] },
      },
    },
    after: ['kb'],
    sent: {
      tools: [oTool('kb')],
      tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'required', tools: [oTool('kb')] } },
    },
  },
  {
    note: 'openai: allowed_tools requiring only forbidden tools',
    vendor: openai,
    body: {
      tools: [oTool('kb'), oTool('rm')],
      tool_choice: { type: 'allowed_tools', allowed_tools: { mode: 'required', tools: [oTool('rm')] } },
    },
    refusal: 'tool_choice_forbidden_tool',
  },
  {
    note: 'openai: legacy functions and function_call',
    vendor: openai,
    body: { functions: [{ name: 'rm' }, { name: 'kb' }], function_call: 'auto' },
    after: ['kb'],
    sent: { functions: [{ name: 'kb' }], function_call: 'auto' },
  },
  {
    note: 'openai: legacy function_call forcing a forbidden function',
    vendor: openai,
    body: { functions: [{ name: 'rm' }], function_call: { name: 'rm' } },
    refusal: 'tool_choice_forbidden_tool',
  },
];

describe('filterTools', () => {
  it.each(FILTER_CASES)('$note', ({ vendor, body, mode, refusal, after, sent }) => {
    const r = vendor.filterTools(body, mayExpose, mode ?? 'strip');
    expect(r.refusal).toBe(refusal);
    if (refusal) return;
    expect(r.after).toEqual(after);
    if (sent === undefined) expect(r.body).toBeUndefined();
    else
      expect(r.body).toMatchObject(
        Object.fromEntries(Object.entries(sent).filter(([, v]) => v !== undefined)),
      );
    for (const [k, v] of Object.entries(sent ?? {}))
      if (v === undefined) expect(r.body).not.toHaveProperty(k);
  });
});

describe('prepare', () => {
  const opts = { defaultMaxTokens: 1000, capOutput: true };
  it.each([
    ['anthropic max_tokens', anthropic, { max_tokens: 50 }, 50, undefined],
    ['anthropic without max_tokens (refused upstream)', anthropic, {}, 1000, undefined],
    ['openai max_completion_tokens × n', openai, { max_completion_tokens: 30, n: 3 }, 90, undefined],
    ['openai legacy max_tokens', openai, { max_tokens: 40 }, 40, undefined],
    ['openai without a limit, budgeted: capped', openai, {}, 1000, { max_completion_tokens: 1000 }],
  ] as const)('%s', (_n, vendor, body, max, sent) => {
    const p = vendor.prepare(body, opts);
    expect(p.maxOutputTokens).toBe(max);
    if (sent) expect(p.body).toMatchObject(sent);
    else expect(p.body).toBeUndefined();
  });

  it('openai without a limit and without budgets is left alone', () => {
    expect(openai.prepare({}, { defaultMaxTokens: 1000, capOutput: false }).body).toBeUndefined();
  });

  it.each([
    [{ stream: true }, { include_usage: true }, true],
    [
      { stream: true, stream_options: { include_usage: false, include_obfuscation: false } },
      { include_usage: true, include_obfuscation: false },
      true,
    ],
    [{ stream: true, stream_options: { include_usage: true } }, undefined, false],
    [{ stream: false }, undefined, false],
  ])('openai stream options %j', (body, options, injected) => {
    const p = openai.prepare({ max_tokens: 5, ...body }, opts);
    expect(p.injectedUsageChunk).toBe(injected);
    expect(p.body?.['stream_options']).toEqual(options);
  });
});

describe('usage', () => {
  it('anthropic JSON', () => {
    expect(
      anthropic.usageFromJson({
        usage: {
          input_tokens: 3,
          output_tokens: 4,
          cache_creation_input_tokens: 5,
          cache_read_input_tokens: 6,
        },
      }),
    ).toEqual({
      input_tokens: 3,
      output_tokens: 4,
      cache_creation_input_tokens: 5,
      cache_read_input_tokens: 6,
    });
    expect(anthropic.usageFromJson({ type: 'message' })).toBeUndefined();
  });

  it('openai JSON splits cached prompt tokens out', () => {
    expect(
      openai.usageFromJson({
        usage: { prompt_tokens: 100, completion_tokens: 7, prompt_tokens_details: { cached_tokens: 60 } },
      }),
    ).toEqual({
      input_tokens: 40,
      output_tokens: 7,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 60,
    });
  });

  const events = (vendor: VendorAdapter, evs: SseEvent[], dropUsageChunk = false) => {
    const names: string[] = [];
    const tap = vendor.streamTap({ dropUsageChunk, onToolCall: (n) => names.push(n) });
    const kept = evs.map((e) => tap.onEvent(e));
    return { usage: tap.usage(), names, kept };
  };

  it('anthropic stream: message_start input and cache, message_delta final output; incomplete until the delta', () => {
    const start: SseEvent = {
      event: 'message_start',
      data: JSON.stringify({
        type: 'message_start',
        message: {
          usage: {
            input_tokens: 9,
            output_tokens: 1,
            cache_creation_input_tokens: 2,
            cache_read_input_tokens: 3,
          },
        },
      }),
    };
    const tool: SseEvent = {
      event: 'content_block_start',
      data: JSON.stringify({
        type: 'content_block_start',
        index: 0,
        content_block: { type: 'tool_use', id: 't', name: 'rm', input: {} },
      }),
    };
    const delta: SseEvent = {
      event: 'message_delta',
      data: JSON.stringify({ type: 'message_delta', delta: {}, usage: { output_tokens: 42 } }),
    };
    expect(events(anthropic, [start, tool]).usage).toBeUndefined();
    const r = events(anthropic, [start, tool, delta]);
    expect(r.usage).toEqual({
      input_tokens: 9,
      output_tokens: 42,
      cache_creation_input_tokens: 2,
      cache_read_input_tokens: 3,
    });
    expect(r.names).toEqual(['rm']);
    expect(r.kept).toEqual([true, true, true]);
  });

  it('openai stream: the usage chunk is read, and dropped only when the gateway asked for it', () => {
    const chunk: SseEvent = {
      event: 'message',
      data: JSON.stringify({
        choices: [
          {
            index: 0,
            delta: {
              tool_calls: [{ index: 0, id: 'c', type: 'function', function: { name: 'rm', arguments: '' } }],
            },
          },
        ],
        usage: null,
      }),
    };
    const usageChunk: SseEvent = {
      event: 'message',
      data: JSON.stringify({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 2 } }),
    };
    const done: SseEvent = { event: 'message', data: '[DONE]' };
    const asked = events(openai, [chunk, usageChunk, done], false);
    expect(asked.kept).toEqual([true, true, true]);
    expect(asked.names).toEqual(['rm']);
    const injected = events(openai, [chunk, usageChunk, done], true);
    expect(injected.kept).toEqual([true, false, true]);
    expect(injected.usage).toEqual({
      input_tokens: 5,
      output_tokens: 2,
      cache_creation_input_tokens: 0,
      cache_read_input_tokens: 0,
    });
  });

  it('error bodies carry the code in each format', () => {
    const e = { status: 429, code: 'SIDECAR_ERR_BUDGET_EXCEEDED' as const, message: 'm' };
    expect(JSON.parse(anthropic.errorBody(e))).toEqual({
      type: 'error',
      error: { type: 'rate_limit_error', message: 'm' },
    });
    expect(JSON.parse(openai.errorBody(e))).toEqual({
      error: { message: 'm', type: 'insufficient_quota', param: null, code: 'SIDECAR_ERR_BUDGET_EXCEEDED' },
    });
    expect(anthropic.errorEvent(e)).toMatch(/^event: error\ndata: \{.*\}\n\n$/);
    expect(openai.errorEvent(e)).toMatch(/^data: \{"error":.*\}\n\n$/);
  });
});
