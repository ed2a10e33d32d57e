// The OpenAI Chat Completions format: tool filtering, output limit, usage (JSON and SSE) and error shapes.
import type { SseEvent } from './sse.ts';
import { count, requiredCount, type TokenUsage } from './usage.ts';
import {
  isObject,
  isSet,
  type JsonObject,
  type MayExpose,
  mightCarry,
  parseJson,
  partition,
  positiveInt,
  stringField,
  type ToolFilter,
  type VendorAdapter,
  type VendorError,
} from './vendor.ts';

function errorType(e: VendorError): string {
  if (e.status === 429)
    return e.code === 'SIDECAR_ERR_BUDGET_EXCEEDED' ? 'insufficient_quota' : 'rate_limit_exceeded';
  if (e.status === 401) return 'authentication_error';
  if (e.status === 403) return 'permission_error';
  if (e.status >= 500) return 'server_error';
  return 'invalid_request_error';
}

// `code` carries the sidecar's registry code: clients branch on status and `type`, people read `code`.
function errorObject(e: VendorError): JsonObject {
  return { error: { message: e.message, type: errorType(e), param: null, code: e.code } };
}

/** Name of a `tools[]` entry: `{type:'function', function:{name}}` or `{type:'custom', custom:{name}}`. */
function toolName(t: unknown): string {
  const type = stringField(t, 'type');
  if (type !== 'function' && type !== 'custom') return '';
  return stringField((t as JsonObject)[type], 'name') ?? '';
}

/** The tool a `tool_choice` forces, or undefined when it forces none by name. */
function forcedTool(choice: unknown): string | undefined {
  const type = stringField(choice, 'type');
  if (type !== 'function' && type !== 'custom') return undefined;
  return stringField((choice as JsonObject)[type], 'name') ?? '';
}

// Chat Completions' built-in web search is switched on by `web_search_options`, outside `tools`: it is judged as a
// tool of this name (the name Anthropic's web search tool has).
const WEB_SEARCH = 'web_search';

const MEDIA_PARTS = new Set(['image_url', 'file', 'input_audio']);

/** Every content part of the messages. */
function contentParts(body: JsonObject): unknown[] {
  const messages = Array.isArray(body['messages']) ? body['messages'] : [];
  return messages.flatMap((m) => (isObject(m) && Array.isArray(m['content']) ? m['content'] : []));
}

/** Image, file and audio parts of the messages' content. */
function mediaItems(body: JsonObject): number {
  return contentParts(body).filter((p) => MEDIA_PARTS.has(stringField(p, 'type') ?? '')).length;
}

// Tiers billed at or below the standard rates: `auto` is what an absent tier means (the project's setting), `flex`
// is cheaper. Anything else (`priority`, `scale`, a new name) may cost more than the price table says.
const PRICED_TIERS = new Set(['auto', 'default', 'flex']);

/** What OpenAI bills outside the price table (docs/model-gateway.md, "Unpriced features"). */
function unpricedFeature(body: JsonObject): string | undefined {
  const tier = body['service_tier'];
  if (isSet(tier) && !(typeof tier === 'string' && PRICED_TIERS.has(tier))) return 'service_tier';
  // Audio tokens are billed at the model's audio rates, several times its text rates.
  const modalities = body['modalities'];
  if (isSet(body['audio']) || (Array.isArray(modalities) && modalities.includes('audio')))
    return 'audio_output';
  if (contentParts(body).some((p) => stringField(p, 'type') === 'input_audio')) return 'audio_input';
  // Built-in web search carries a fee per call on top of tokens.
  return isSet(body['web_search_options']) ? WEB_SEARCH : undefined;
}

/**
 * `prompt_tokens` includes cached tokens; they are split out so cache reads can be priced on their own. Undefined
 * unless both required counts are readable, so usage the gateway cannot read is charged at the reservation.
 */
function usageOf(u: unknown): TokenUsage | undefined {
  if (!isObject(u)) return undefined;
  const prompt = requiredCount(u['prompt_tokens']);
  const output = requiredCount(u['completion_tokens']);
  if (prompt === undefined || output === undefined) return undefined;
  const details = u['prompt_tokens_details'];
  const cached = Math.min(prompt, isObject(details) ? count(details['cached_tokens']) : 0);
  return {
    input_tokens: prompt - cached,
    output_tokens: output,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: cached,
  };
}

function untypedCallName(call: JsonObject): string {
  return stringField(call['function'], 'name') ?? stringField(call['custom'], 'name') ?? '';
}

/** Names of tool calls in a message or a streamed delta (`tool_calls[]` and the legacy `function_call`). */
function callNames(message: unknown): string[] {
  if (!isObject(message)) return [];
  const names: string[] = [];
  if (Array.isArray(message['tool_calls'])) {
    for (const call of message['tool_calls']) {
      // `type` is optional on streamed deltas: an untyped call is named by whichever of `function`/`custom` it has.
      const name = isObject(call) && call['type'] === undefined ? untypedCallName(call) : toolName(call);
      // Streamed continuation deltas carry no name; only the first delta of a call names it.
      if (name !== '') names.push(name);
    }
  }
  const legacy = stringField(message['function_call'], 'name');
  if (legacy) names.push(legacy);
  return names;
}

function choicesOf(json: unknown, field: 'message' | 'delta'): unknown[] {
  if (!isObject(json) || !Array.isArray(json['choices'])) return [];
  return json['choices'].map((c) => (isObject(c) ? c[field] : undefined));
}

interface Filtered {
  readonly kept: unknown[];
  readonly removed: string[];
  readonly names: string[];
}

/** `tool_choice: {type:'allowed_tools', allowed_tools:{mode, tools}}`: narrowed to what may be exposed. */
function narrowAllowedTools(choice: JsonObject, mayExpose: MayExpose): { choice?: unknown; refuse?: true } {
  const allowed = choice['allowed_tools'];
  if (!isObject(allowed) || !Array.isArray(allowed['tools'])) return {};
  const { kept, removed } = partition(allowed['tools'], toolName, mayExpose);
  if (removed.length === 0) return {};
  if (kept.length > 0) return { choice: { ...choice, allowed_tools: { ...allowed, tools: kept } } };
  return allowed['mode'] === 'required' ? { refuse: true } : { choice: 'none' };
}

export const openai: VendorAdapter = {
  provider: 'openai',
  prefix: '/openai',
  path: '/v1/chat/completions',
  defaultUpstream: 'https://api.openai.com',
  defaultKeyEnv: 'OPENAI_API_KEY',

  keyHeader: (key) => ['authorization', `Bearer ${key}`],
  limitFields: ['max_completion_tokens', 'max_tokens', 'n'],

  filterTools(body, mayExpose, mode): ToolFilter {
    const tools: Filtered = partition(Array.isArray(body['tools']) ? body['tools'] : [], toolName, mayExpose);
    const fns: Filtered = partition(
      Array.isArray(body['functions']) ? body['functions'] : [],
      (f) => stringField(f, 'name') ?? '',
      mayExpose,
    );
    const webSearch = isSet(body['web_search_options']);
    const before = [...tools.names, ...fns.names, ...(webSearch ? [WEB_SEARCH] : [])];
    const after = before.filter((n) => n !== '' && mayExpose(n));
    const dropWebSearch = webSearch && !mayExpose(WEB_SEARCH);
    const refuse = { before, after, refusal: 'tool_choice_forbidden_tool' } as const;

    const choice = body['tool_choice'];
    const forced = forcedTool(choice);
    if (forced !== undefined && !mayExpose(forced)) return refuse;
    const legacyForced = stringField(body['function_call'], 'name');
    if (legacyForced !== undefined && !mayExpose(legacyForced)) return refuse;
    if (choice === 'required' && tools.names.length > 0 && tools.kept.length === 0) return refuse;
    const narrowed =
      isObject(choice) && choice['type'] === 'allowed_tools' ? narrowAllowedTools(choice, mayExpose) : {};
    if (narrowed.refuse) return refuse;

    const removed = tools.removed.length > 0 || fns.removed.length > 0 || dropWebSearch;
    if (!removed && narrowed.choice === undefined) return { before, after };
    if (mode === 'reject') return { before, after, refusal: 'tools_forbidden' };
    const next: JsonObject = { ...body };
    if (dropWebSearch) delete next['web_search_options'];
    if (narrowed.choice !== undefined) next['tool_choice'] = narrowed.choice;
    if (tools.removed.length > 0) {
      if (tools.kept.length > 0) next['tools'] = tools.kept;
      else {
        // The API refuses tool_choice and parallel_tool_calls without tools.
        delete next['tools'];
        delete next['parallel_tool_calls'];
        if (typeof next['tool_choice'] === 'string' || isObject(next['tool_choice']))
          delete next['tool_choice'];
      }
    }
    if (fns.removed.length > 0) {
      if (fns.kept.length > 0) next['functions'] = fns.kept;
      else {
        delete next['functions'];
        delete next['function_call'];
      }
    }
    return { before, after, body: next };
  },

  unpricedFeature: (body) => unpricedFeature(body),

  prepare(body, opts) {
    let next: JsonObject | undefined;
    const choices = positiveInt(body['n']) ?? 1;
    let limit = positiveInt(body['max_completion_tokens']) ?? positiveInt(body['max_tokens']);
    if (limit === undefined) {
      limit = opts.defaultMaxTokens;
      // Without a limit the model may write until its context is full: no reservation could bound that.
      if (opts.capOutput) next = { ...body, max_completion_tokens: limit };
    }
    let injectedUsageChunk = false;
    const streamOptions = body['stream_options'];
    if (body['stream'] === true && !(isObject(streamOptions) && streamOptions['include_usage'] === true)) {
      next = {
        ...(next ?? body),
        stream_options: { ...(isObject(streamOptions) ? streamOptions : {}), include_usage: true },
      };
      injectedUsageChunk = true;
    }
    return {
      ...(next ? { body: next } : {}),
      maxOutputTokens: limit * choices,
      injectedUsageChunk,
      mediaItems: mediaItems(body),
    };
  },

  usageFromJson: (json) => (isObject(json) ? usageOf(json['usage']) : undefined),

  toolCallsFromJson: (json) => choicesOf(json, 'message').flatMap(callNames),

  // With include_usage the last chunk before [DONE] has `choices: []` and the usage; every other chunk `usage: null`.
  streamTap({ dropUsageChunk, onToolCall }) {
    let usage: TokenUsage | undefined;
    return {
      onEvent(ev: SseEvent): boolean {
        const hasUsage = mightCarry.usage(ev.data);
        if (!hasUsage && !mightCarry.name(ev.data)) return true;
        const chunk = parseJson(ev.data);
        if (!isObject(chunk)) return true;
        for (const name of choicesOf(chunk, 'delta').flatMap(callNames)) onToolCall(name);
        const u = hasUsage ? usageOf(chunk['usage']) : undefined;
        if (u === undefined) return true;
        usage = u;
        const usageOnly = Array.isArray(chunk['choices']) && chunk['choices'].length === 0;
        return !(dropUsageChunk && usageOnly);
      },
      usage: () => usage,
    };
  },

  errorBody: (e) => JSON.stringify(errorObject(e)),
  errorEvent: (e) => `data: ${JSON.stringify(errorObject(e))}\n\n`,
};
