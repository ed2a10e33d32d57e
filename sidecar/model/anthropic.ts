// The Anthropic Messages format: tool filtering, output limit, usage (JSON and SSE) and error shapes.
import type { SseEvent } from './sse.ts';
import { count, requiredCount, type TokenUsage, ZERO_USAGE } from './usage.ts';
import {
  isObject,
  isSet,
  type JsonObject,
  mightCarry,
  parseJson,
  partition,
  positiveInt,
  stringField,
  type ToolFilter,
  type VendorAdapter,
  type VendorError,
} from './vendor.ts';

// https://docs.anthropic.com/en/api/errors: the `error.type` for each status the gateway produces.
function errorType(status: number): string {
  if (status === 400 || status === 405 || status === 415) return 'invalid_request_error';
  if (status === 401) return 'authentication_error';
  if (status === 403) return 'permission_error';
  if (status === 404) return 'not_found_error';
  if (status === 413) return 'request_too_large';
  if (status === 429) return 'rate_limit_error';
  if (status === 503) return 'overloaded_error';
  return 'api_error';
}

function errorObject(e: VendorError): JsonObject {
  return { type: 'error', error: { type: errorType(e.status), message: e.message } };
}

const COUNTS = [
  'input_tokens',
  'output_tokens',
  'cache_creation_input_tokens',
  'cache_read_input_tokens',
] as const;

/** What one `usage` object says: its own counts, and the sums over its `iterations` when it lists them. */
interface UsageFields extends Partial<Record<keyof TokenUsage, number>> {
  iterations?: TokenUsage;
}

/**
 * `usage` of a Message or of a message_delta; absent fields stay undefined so a delta only overrides what it has.
 * A required count that is present but not a non-negative integer is kept as NaN, so `complete` rejects it.
 */
function usageFields(u: unknown): UsageFields {
  if (!isObject(u)) return {};
  const out: UsageFields = {};
  for (const key of COUNTS) {
    const v = u[key];
    if (v === undefined || v === null) continue;
    if (key === 'input_tokens' || key === 'output_tokens') out[key] = requiredCount(v) ?? Number.NaN;
    else if (typeof v === 'number') out[key] = count(v);
  }
  const iterations = u['iterations'];
  if (Array.isArray(iterations)) {
    const sums: Record<keyof TokenUsage, number> = { ...ZERO_USAGE };
    for (const it of iterations) if (isObject(it)) for (const key of COUNTS) sums[key] += count(it[key]);
    out.iterations = sums;
  }
  return out;
}

/** Undefined unless input and output counts were both read: unreadable usage is charged at the reservation. */
function complete(u: UsageFields): TokenUsage | undefined {
  const input = u.input_tokens;
  const output = u.output_tokens;
  if (input === undefined || output === undefined || Number.isNaN(input) || Number.isNaN(output))
    return undefined;
  const top: TokenUsage = {
    input_tokens: input,
    output_tokens: output,
    cache_creation_input_tokens: u.cache_creation_input_tokens ?? 0,
    cache_read_input_tokens: u.cache_read_input_tokens ?? 0,
  };
  // A call that ran several sampling passes (server-side compaction) lists each in `usage.iterations`. Anthropic
  // documents that the top-level counts cover the final pass only, while every pass is billed. Each kind is charged
  // at the larger of its top-level count and its sum over the passes: never less than the vendor bills under either
  // reading, and if the top level ever includes the passes, that over-counts, which stops a budget early rather
  // than letting it overrun.
  const sums = u.iterations;
  if (sums === undefined) return top;
  const charged: Record<keyof TokenUsage, number> = { ...top };
  for (const key of COUNTS) charged[key] = Math.max(top[key], sums[key]);
  return charged;
}

// Anthropic-defined tools, judged by name like any other. A later version of one of these (`web_search_2026…`) is
// still that tool; a type outside them is one the gateway cannot judge, so the tool counts as unnamed and is removed.
const KNOWN_TOOL_TYPE =
  /^(?:bash|code_execution|computer|memory|text_editor|tool_search_tool_bm25|tool_search_tool_regex|web_fetch|web_search)_\d{8}$/;

/** A custom tool (no `type`, or `custom`) or a known Anthropic tool: its name; any other tool: "". */
function toolName(t: unknown): string {
  const type = isObject(t) ? t['type'] : undefined;
  const known =
    type === undefined || type === 'custom' || (typeof type === 'string' && KNOWN_TOOL_TYPE.test(type));
  return known ? (stringField(t, 'name') ?? '') : '';
}

// What Anthropic bills outside the four token rates of the price table (docs/model-gateway.md, "Unpriced features").
// Betas, by prefix so that every dated version counts: server-side compaction (extra sampling passes), fast mode
// (a multiple of the standard rates) and the 1M-token context window (premium rates past 200k input tokens).
const UNPRICED_BETAS: ReadonlyArray<readonly [prefix: string, feature: string]> = [
  ['compact-', 'compaction'],
  ['fast-mode', 'fast_mode'],
  ['context-1m', 'long_context'],
];
// Server tools with a fee per use on top of tokens: web search per search, code execution per container hour.
const FEE_TOOL_TYPE = /^(web_search|code_execution)_\d{8}$/;

/** A `cache_control` anywhere in the body with a `ttl` other than the default 5 minutes (1-hour writes cost 2×). */
function longCacheTtl(body: JsonObject): boolean {
  // Iterative, and children are pushed one by one: a spread of a huge array would overflow the call stack.
  const stack: object[] = [body];
  for (let v = stack.pop(); v !== undefined; v = stack.pop()) {
    const cache = Array.isArray(v) ? undefined : (v as JsonObject)['cache_control'];
    if (isObject(cache) && isSet(cache['ttl']) && cache['ttl'] !== '5m') return true;
    for (const child of Array.isArray(v) ? v : Object.values(v))
      if (typeof child === 'object' && child !== null) stack.push(child);
  }
  return false;
}

function unpricedFeature(body: JsonObject, betaHeader: string | string[] | undefined): string | undefined {
  for (const beta of String(betaHeader ?? '').split(',')) {
    const name = beta.trim().toLowerCase();
    const hit = UNPRICED_BETAS.find(([prefix]) => name.startsWith(prefix));
    if (hit) return hit[1];
  }
  const context = body['context_management'];
  const edits = isObject(context) ? context['edits'] : undefined;
  if (Array.isArray(edits) && edits.some((e) => stringField(e, 'type')?.startsWith('compact_')))
    return 'compaction';
  if (isSet(body['speed']) && body['speed'] !== 'standard') return 'fast_mode';
  // US-only inference is billed at 1.1×.
  if (isSet(body['inference_geo']) && body['inference_geo'] !== 'global') return 'inference_geo';
  const tools = Array.isArray(body['tools']) ? body['tools'] : [];
  for (const t of tools) {
    const fee = FEE_TOOL_TYPE.exec(stringField(t, 'type') ?? '');
    if (fee) return fee[1];
  }
  return longCacheTtl(body) ? 'cache_ttl' : undefined;
}

/** Image and document blocks, also inside tool results and documents made of content blocks. */
function mediaBlocks(blocks: unknown): number {
  if (!Array.isArray(blocks)) return 0;
  let n = 0;
  for (const b of blocks) {
    if (!isObject(b)) continue;
    if (b['type'] === 'image' || b['type'] === 'document') n++;
    n += mediaBlocks(b['content']);
    if (isObject(b['source'])) n += mediaBlocks(b['source']['content']);
  }
  return n;
}

function mediaItems(body: JsonObject): number {
  const messages = Array.isArray(body['messages']) ? body['messages'] : [];
  return messages.reduce((n: number, m) => n + (isObject(m) ? mediaBlocks(m['content']) : 0), 0);
}

export const anthropic: VendorAdapter = {
  provider: 'anthropic',
  prefix: '/anthropic',
  path: '/v1/messages',
  defaultUpstream: 'https://api.anthropic.com',
  defaultKeyEnv: 'ANTHROPIC_API_KEY',

  keyHeader: (key) => ['x-api-key', key],
  limitFields: ['max_tokens'],

  filterTools(body, mayExpose, mode): ToolFilter {
    const tools = Array.isArray(body['tools']) ? body['tools'] : [];
    const { names, kept, removed } = partition(tools, toolName, mayExpose);
    // Remote MCP servers (beta connector) hand the model tools the gateway cannot see, so they never pass.
    const mcp = Array.isArray(body['mcp_servers']) ? body['mcp_servers'] : [];
    const mcpNames = mcp.map((s) => `mcp_server:${stringField(s, 'name') ?? ''}`);
    const before = [...names, ...mcpNames];
    const after = names.filter((n) => n !== '' && mayExpose(n));
    const choice = body['tool_choice'];
    const choiceType = stringField(choice, 'type');
    const forced = choiceType === 'tool' ? (stringField(choice, 'name') ?? '') : undefined;
    if (forced !== undefined && !mayExpose(forced)) {
      return { before, after, refusal: 'tool_choice_forbidden_tool' };
    }
    if (choiceType === 'any' && tools.length > 0 && kept.length === 0) {
      return { before, after, refusal: 'tool_choice_forbidden_tool' };
    }
    if (removed.length === 0 && mcp.length === 0) return { before, after };
    if (mode === 'reject') return { before, after, refusal: 'tools_forbidden' };
    const next: JsonObject = { ...body };
    delete next['mcp_servers'];
    if (kept.length > 0) next['tools'] = kept;
    else if (tools.length > 0) {
      delete next['tools'];
      // The API refuses a tool_choice without tools.
      if (choiceType === 'auto' || choiceType === 'none') delete next['tool_choice'];
    }
    return { before, after, body: next };
  },

  unpricedFeature: (body, headers) => unpricedFeature(body, headers['anthropic-beta']),

  prepare(body, opts) {
    // max_tokens is required by the Messages API; a request without it is refused upstream, not here.
    return {
      maxOutputTokens: positiveInt(body['max_tokens']) ?? opts.defaultMaxTokens,
      injectedUsageChunk: false,
      mediaItems: mediaItems(body),
    };
  },

  usageFromJson(json) {
    if (!isObject(json) || !isObject(json['usage'])) return undefined;
    return complete(usageFields(json['usage']));
  },

  toolCallsFromJson(json) {
    if (!isObject(json) || !Array.isArray(json['content'])) return [];
    return json['content'].flatMap((b) =>
      stringField(b, 'type') === 'tool_use' ? [stringField(b, 'name') ?? ''] : [],
    );
  },

  // message_start carries input and cache tokens (and a provisional output count); message_delta carries the final
  // cumulative output count and may restate the others. The usage is complete once message_delta arrived and the
  // merged counts include readable input and output tokens.
  streamTap({ onToolCall }) {
    let usage: UsageFields = {};
    let done = false;
    return {
      onEvent(ev: SseEvent): boolean {
        const type = ev.event;
        if (type === 'message_start') {
          const data = parseJson(ev.data);
          const message = isObject(data) ? data['message'] : undefined;
          usage = { ...usage, ...usageFields(isObject(message) ? message['usage'] : undefined) };
        } else if (type === 'message_delta') {
          const data = parseJson(ev.data);
          if (isObject(data) && isObject(data['usage'])) {
            usage = { ...usage, ...usageFields(data['usage']) };
            done = true;
          }
        } else if (type === 'content_block_start' && mightCarry.name(ev.data)) {
          const data = parseJson(ev.data);
          const block = isObject(data) ? data['content_block'] : undefined;
          if (stringField(block, 'type') === 'tool_use') onToolCall(stringField(block, 'name') ?? '');
        }
        return true;
      },
      usage: () => (done ? complete(usage) : undefined),
    };
  },

  errorBody: (e) => JSON.stringify(errorObject(e)),
  errorEvent: (e) => `event: error\ndata: ${JSON.stringify(errorObject(e))}\n\n`,
};
