// An Anthropic answer that lists sampling passes in `usage.iterations` (server-side compaction, switched on by the
// agent with `context_management` and a `compact-*` beta) is charged at least the sum over the passes, streamed or
// not. Why it matters: Anthropic bills every pass, but its top-level usage counts the final one only, so reading the
// top level alone would record a fraction of what an agent role with a long history really costs (here 24,000 of
// 207,500 tokens). Without a budget the call passes (under one, compaction is refused: unpriced-features.test.ts).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { anthropicMessage, useScriptedUpstream } from './support.ts';

const pass = (type: string, input: number, output: number) => ({
  type,
  input_tokens: input,
  output_tokens: output,
  cache_creation_input_tokens: 0,
  cache_read_input_tokens: 0,
});

const CASES = {
  // Anthropic's compaction documentation: the top level is the final pass; a summary pass read the whole history.
  compacted: {
    ...pass('message', 23_000, 1_000),
    iterations: [pass('compaction', 180_000, 3_500), pass('message', 23_000, 1_000)],
  },
  // Should the top level ever include every pass, it is not charged twice, nor less than it says.
  'top level larger': { ...pass('message', 30_000, 2_000), iterations: [pass('message', 10_000, 1_000)] },
} as const;
type CaseName = keyof typeof CASES;

const betas: unknown[] = [];
const ctx = useScriptedUpstream(
  (model: string, req: IncomingMessage, res: ServerResponse) => {
    betas.push(req.headers['anthropic-beta']);
    const { type: _type, ...usage } = CASES[req.headers['x-test-case'] as CaseName];
    if (req.headers['x-test-stream'] !== 'true') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(anthropicMessage(model, usage)));
      return;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    // The passes are listed with the final usage, in message_delta.
    const { iterations: _passes, ...start } = usage;
    const events = [
      [
        'message_start',
        { type: 'message_start', message: { ...anthropicMessage(model, start), content: [] } },
      ],
      ['message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage }],
      ['message_stop', { type: 'message_stop' }],
    ] as const;
    res.end(events.map(([event, data]) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`).join(''));
  },
  // No budget: compaction is allowed, and must still be counted in full.
  {},
);

describe('usage iterations', () => {
  it.each([
    ['compacted', false, { input_tokens: 203_000, output_tokens: 4_500 }],
    ['compacted', true, { input_tokens: 203_000, output_tokens: 4_500 }],
    ['top level larger', false, { input_tokens: 30_000, output_tokens: 2_000 }],
    ['top level larger', true, { input_tokens: 30_000, output_tokens: 2_000 }],
  ] as const)('%s (stream: %s): charged %o', async (name, stream, charged) => {
    const { gw } = ctx;
    const before = gw.gateway.spend().models['stub-small'];
    const res = await fetch(`${gw.url}/anthropic/v1/messages`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'anthropic-version': '2023-06-01',
        'anthropic-beta': 'compact-2026-01-12',
        'x-test-case': name,
        'x-test-stream': String(stream),
      },
      body: JSON.stringify({
        model: 'stub-small',
        max_tokens: 1_000,
        stream,
        messages: [{ role: 'user', content: 'history '.repeat(1_000) }],
        context_management: { edits: [{ type: 'compact_20260112' }] },
      }),
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    // Compaction is the agent's to switch on: its beta reached the vendor.
    expect(betas.at(-1)).toBe('compact-2026-01-12');
    const after = gw.gateway.spend().models['stub-small'];
    expect((after?.input_tokens ?? 0) - (before?.input_tokens ?? 0)).toBe(charged.input_tokens);
    expect((after?.output_tokens ?? 0) - (before?.output_tokens ?? 0)).toBe(charged.output_tokens);
    // stub-small: $1 in / $5 out per Mtok.
    const usd = (charged.input_tokens * 1 + charged.output_tokens * 5) / 1e6;
    expect((after?.cost_usd ?? 0) - (before?.cost_usd ?? 0)).toBeCloseTo(usd, 9);
  });
});
