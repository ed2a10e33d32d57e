// Request features the vendor bills outside the price table (four token counts at one rate per model) are refused
// under a budget: a 400 in the vendor's format, audited as `unpriced_feature` with the feature's name, before anything
// is reserved or sent. Without a budget they pass. Why it matters: the agent switches these on itself (priority tier,
// fast mode, 1-hour cache writes, audio, per-use server tools, compaction, the 1M context), and the gateway would
// charge each at the standard rates: an agent role's recorded cost would be a half, a sixth or less of its real cost,
// and its `max_usd` budget overrun by as much.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { anthropic } from '../../../sidecar/model/anthropic.ts';
import { openai } from '../../../sidecar/model/openai.ts';
import type { JsonObject, VendorAdapter } from '../../../sidecar/model/vendor.ts';
import { anthropicMessage, BASE_POLICY, type GatewayUnderTest, useScriptedUpstream } from './support.ts';

const ttl = (value: unknown) => ({ type: 'ephemeral', ttl: value });
const userText = (cache_control: unknown) => ({
  messages: [{ role: 'user', content: [{ type: 'text', text: 'x', cache_control }] }],
});

type DetectionCase = [what: string, feature: string | undefined, body: JsonObject, beta?: string];
const web = (type: string, name: string) => ({ tools: [{ type, name }] });
const compact = { context_management: { edits: [{ type: 'compact_20260112' }] } };
const clear = { context_management: { edits: [{ type: 'clear_tool_uses_20250919' }] } };
const toolResult = (block: JsonObject) => ({
  messages: [{ role: 'user', content: [{ type: 'tool_result', content: [block] }] }],
});
const audioIn = { type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } };

// What the request does, the feature refused (undefined: priced, it passes), body, anthropic-beta header.
const ANTHROPIC: DetectionCase[] = [
  ['a plain request', undefined, { messages: [] }],
  ['compaction beta', 'compaction', {}, 'compact-2026-01-12'],
  ['compaction edit', 'compaction', compact],
  ['context editing that only clears', undefined, clear],
  ['fast mode', 'fast_mode', { speed: 'fast' }],
  ['fast-mode beta among others', 'fast_mode', {}, 'interleaved-thinking-2025-05-14, Fast-Mode-2026-02-01'],
  ['standard speed', undefined, { speed: 'standard' }],
  ['1M context beta', 'long_context', {}, 'context-1m-2025-08-07'],
  ['a beta that does not change prices', undefined, {}, 'token-efficient-tools-2025-02-19'],
  ['US-only inference', 'inference_geo', { inference_geo: 'us' }],
  ['global inference', undefined, { inference_geo: 'global' }],
  ['web search tool', 'web_search', web('web_search_20250305', 'web_search')],
  ['code execution tool', 'code_execution', web('code_execution_20250825', 'code_execution')],
  ['web fetch tool (tokens only)', undefined, web('web_fetch_20250910', 'web_fetch')],
  ['1-hour cache write in a message', 'cache_ttl', userText(ttl('1h'))],
  ['5-minute cache write', undefined, userText(ttl('5m'))],
  ['cache write without ttl', undefined, userText({ type: 'ephemeral' })],
  ['1-hour cache write on the whole request', 'cache_ttl', { cache_control: ttl('1h') }],
  ['1-hour cache write on a tool', 'cache_ttl', { tools: [{ name: 'kb', cache_control: ttl('1h') }] }],
  [
    '1-hour cache write deep in a tool result',
    'cache_ttl',
    toolResult({ type: 'text', cache_control: ttl('1h') }),
  ],
];

const OPENAI: DetectionCase[] = [
  ['a plain request', undefined, { messages: [] }],
  ['priority tier', 'service_tier', { service_tier: 'priority' }],
  ['scale tier', 'service_tier', { service_tier: 'scale' }],
  ['default tier', undefined, { service_tier: 'default' }],
  ['auto tier (what no tier means)', undefined, { service_tier: 'auto' }],
  ['flex tier (cheaper)', undefined, { service_tier: 'flex' }],
  ['audio output', 'audio_output', { modalities: ['text', 'audio'] }],
  ['audio parameters', 'audio_output', { audio: { voice: 'alloy', format: 'wav' } }],
  ['text only', undefined, { modalities: ['text'], audio: null }],
  ['audio input', 'audio_input', { messages: [{ role: 'user', content: [audioIn] }] }],
  ['built-in web search', 'web_search', { web_search_options: {} }],
  ['web search turned off', undefined, { web_search_options: null }],
  ['an Anthropic beta means nothing here', undefined, {}, 'fast-mode-2026-02-01'],
];

describe('which features are unpriced', () => {
  const detect = (vendor: VendorAdapter, body: JsonObject, beta: string | undefined) =>
    vendor.unpricedFeature(body, beta === undefined ? {} : { 'anthropic-beta': beta });
  it.each(ANTHROPIC)('anthropic: %s -> %s', (_what, feature, body, beta) => {
    expect(detect(anthropic, body, beta)).toBe(feature);
  });
  it.each(OPENAI)('openai: %s -> %s', (_what, feature, body, beta) => {
    expect(detect(openai, body, beta)).toBe(feature);
  });
});

// What reaches the gateway: feature, path, anthropic-beta header, body (without model, limit and messages).
const OPENAI_PATH = '/openai/v1/chat/completions';
const ANTHROPIC_PATH = '/anthropic/v1/messages';
const REQUESTS: ReadonlyArray<readonly [string, string, string, JsonObject]> = [
  ['service_tier', OPENAI_PATH, '', { service_tier: 'priority' }],
  ['audio_output', OPENAI_PATH, '', { modalities: ['text', 'audio'], audio: { voice: 'alloy' } }],
  ['web_search', OPENAI_PATH, '', { web_search_options: {} }],
  ['fast_mode', ANTHROPIC_PATH, 'fast-mode-2026-02-01', { speed: 'fast' }],
  ['cache_ttl', ANTHROPIC_PATH, '', { system: [{ type: 'text', text: 'prefix', cache_control: ttl('1h') }] }],
  ['compaction', ANTHROPIC_PATH, 'compact-2026-01-12', compact],
  ['web_search', ANTHROPIC_PATH, '', web('web_search_20250305', 'web_search')],
];

let received = 0;
function answer(model: string, req: IncomingMessage, res: ServerResponse): void {
  received++;
  res.writeHead(200, { 'content-type': 'application/json' });
  if (req.url?.includes('/chat/completions')) {
    const usage = { prompt_tokens: 10, completion_tokens: 10, total_tokens: 20 };
    res.end(JSON.stringify({ id: 'c', object: 'chat.completion', model, choices: [], usage }));
  } else res.end(JSON.stringify(anthropicMessage(model, { input_tokens: 10, output_tokens: 10 })));
}

const WEB_SEARCH_RULE = `  - name: search
    action: tool_call
    conditions: { tool: { equals: web_search } }
    effect: ALLOW
`;
const USD_BUDGET = 'budgets:\n  - { name: monthly-usd, period: month, max_usd: 100 }\n';

function post(gw: GatewayUnderTest, path: string, beta: string, body: JsonObject): Promise<Response> {
  const limit = path.startsWith('/openai') ? { max_completion_tokens: 100 } : { max_tokens: 100 };
  return fetch(`${gw.url}${path}`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'anthropic-version': '2023-06-01',
      ...(beta ? { 'anthropic-beta': beta } : {}),
    },
    body: JSON.stringify({
      model: 'stub-small',
      ...limit,
      messages: [{ role: 'user', content: 'hi' }],
      ...body,
    }),
  });
}

describe('under a budget', () => {
  const ctx = useScriptedUpstream(answer, { policy: `${BASE_POLICY}${WEB_SEARCH_RULE}${USD_BUDGET}` });

  it.each(REQUESTS)(
    '%s (%s) is refused before anything is reserved or sent',
    async (feature, path, beta, body) => {
      const { gw } = ctx;
      const sent = received;
      const res = await post(gw, path, beta, body);
      expect(res.status).toBe(400);
      expect(res.headers.get('x-should-retry')).toBe('false');
      expect(res.headers.get('x-sidecar-error-code')).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
      // Both vendors' formats: {type: 'error', error: {type, message}} and {error: {type, message, code}}.
      expect(await res.json()).toMatchObject({ error: { type: 'invalid_request_error' } });
      expect(received).toBe(sent);
      expect(gw.gateway.spend().budgets[0]).toMatchObject({ spent_usd: 0, reserved_usd: 0 });
      const id = res.headers.get('x-sidecar-decision-id');
      const entry = (await gw.audit()).find((e) => e.decision_id === id);
      expect(entry).toMatchObject({
        kind: 'model',
        effect: 'DENY',
        reason: 'unpriced_feature',
        extra: { feature },
      });
    },
  );

  it('a priced request still passes', async () => {
    const res = await post(ctx.gw, ANTHROPIC_PATH, 'token-efficient-tools-2025-02-19', {
      system: [{ type: 'text', text: 'prefix', cache_control: ttl('5m') }],
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
  });
});

describe('under a budget, with web search not allowed to the agent', () => {
  const ctx = useScriptedUpstream(answer, { policy: `${BASE_POLICY}${USD_BUDGET}` });

  it.each(REQUESTS.filter(([feature]) => feature === 'web_search'))(
    '%s (%s) is stripped, not refused: nothing unpriced is left to send',
    async (_feature, path, beta, body) => {
      const res = await post(ctx.gw, path, beta, body);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
    },
  );
});

describe('without a budget', () => {
  const ctx = useScriptedUpstream(answer, { policy: `${BASE_POLICY}${WEB_SEARCH_RULE}` });

  it.each(REQUESTS)(
    '%s (%s) passes to the vendor (its recorded cost may be low)',
    async (_f, path, beta, body) => {
      const sent = received;
      const res = await post(ctx.gw, path, beta, body);
      expect(res.status).toBe(200);
      await res.arrayBuffer();
      expect(received).toBe(sent + 1);
    },
  );
});
