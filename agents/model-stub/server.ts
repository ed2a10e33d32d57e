// The offline model stand-in: a deterministic HTTP server that answers Anthropic Messages and OpenAI Chat Completions calls.

import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

// ---------------------------------------------------------------------------------------------------------------
// Public surface

export interface ModelStubOptions {
  /** Interface to listen on; default 127.0.0.1. */
  readonly host?: string;
  /** Port to listen on; default 0 (an ephemeral port). */
  readonly port?: number;
  /** When set, calls must carry this key (`x-api-key` / `Authorization: Bearer`) or get a vendor-format 401. */
  readonly requireApiKey?: string;
  /** Clock for OpenAI's `created` field, in epoch milliseconds; default `Date.now`. */
  readonly now?: () => number;
  /**
   * How many of the most recent requests `requests` keeps (the oldest go first); default 1000, 0 keeps none. A
   * long-running stand-in (the container demo, a benchmark) must not hold every request it ever served.
   */
  readonly recordLimit?: number;
}

export const DEFAULT_RECORD_LIMIT = 1000;

export interface RecordedRequest {
  readonly method: string;
  /** Path without the query string. */
  readonly path: string;
  /** Lower-cased header names; a repeated header is joined with ", ". */
  readonly headers: Readonly<Record<string, string>>;
  /** The body parsed as JSON, or undefined when it was empty or not JSON. */
  readonly body: unknown;
  readonly rawBody: string;
}

export interface ModelStub {
  /** Base URL, e.g. `http://127.0.0.1:41234` (Anthropic SDK baseURL; OpenAI SDK baseURL is `${url}/v1`). */
  readonly url: string;
  readonly port: number;
  /** The most recent requests received (up to `recordLimit`), in arrival order; clear it with `requests.length = 0`. */
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Model names that switch on a fault instead of an answer. Any other model name answers normally. */
export const STUB_FAULT_MODELS = {
  error500: 'stub-error-500',
  error429: 'stub-error-429',
  slow: 'stub-slow',
  reset: 'stub-reset',
} as const;

/** Request headers that tune the stub. */
export const STUB_HEADERS = {
  /** How long `stub-slow` waits before answering, in ms (default 2000). */
  delayMs: 'x-stub-delay-ms',
  /** Pause between streamed events, in ms (default 0), to observe incremental forwarding. */
  chunkDelayMs: 'x-stub-chunk-delay-ms',
} as const;

export const DEFAULT_SLOW_DELAY_MS = 2000;
const MAX_DELAY_MS = 600_000;
const MAX_BODY_BYTES = 32 * 1024 * 1024;
const ECHO_CHARS = 80;
const TOOL_RESULT_CHARS = 200;
const STREAM_JSON_PIECE_CHARS = 16;

// ---------------------------------------------------------------------------------------------------------------
// The deterministic model: a vendor-neutral turn in, a reply out. Pure.

export interface OfferedTool {
  readonly name: string;
  /** The input schema's `properties`, when the tool declares any; arguments are restricted to these keys. */
  readonly properties: Readonly<Record<string, unknown>> | undefined;
}

export type ToolChoice =
  | { readonly mode: 'auto' | 'none' | 'any' }
  | { readonly mode: 'tool'; readonly name: string };

/** What the stub model reads from a request, whichever vendor sent it. */
export interface Turn {
  /** Text of the last user message. */
  readonly userText: string;
  /** Text of the tool results the last turn carries, or undefined when it carries none. */
  readonly toolResult: string | undefined;
  readonly tools: readonly OfferedTool[];
  readonly toolChoice: ToolChoice;
}

export type Reply =
  | { readonly kind: 'text'; readonly text: string }
  | { readonly kind: 'tool_call'; readonly name: string; readonly input: Readonly<Record<string, unknown>> };

/**
 * The stub's whole behaviour, in order: a forced tool is called; `any`/`required` calls the tool the text names,
 * else the first tool; tool results are acknowledged; `none` echoes; a tool named in the text is called; else echo.
 */
export function decideReply(turn: Turn): Reply {
  const { toolChoice, tools } = turn;
  if (toolChoice.mode === 'tool') {
    const forced = tools.find((t) => t.name === toolChoice.name);
    if (forced) return callTool(forced, turn.userText);
  }
  if (toolChoice.mode === 'any') {
    const chosen = findNamedTool(turn.userText, tools) ?? tools[0];
    if (chosen) return callTool(chosen, turn.userText);
  }
  if (turn.toolResult !== undefined) {
    return { kind: 'text', text: `Tool result: ${firstChars(turn.toolResult, TOOL_RESULT_CHARS)}` };
  }
  if (toolChoice.mode !== 'none') {
    const named = findNamedTool(turn.userText, tools);
    if (named) return callTool(named, turn.userText);
  }
  return { kind: 'text', text: `Stub reply: ${firstChars(turn.userText, ECHO_CHARS)}` };
}

function callTool(tool: OfferedTool, text: string): Reply {
  return { kind: 'tool_call', name: tool.name, input: parseToolArguments(text, tool.properties) };
}

/** The offered tool whose name appears earliest in the text as a whole word; the longer name wins a tie. */
export function findNamedTool(text: string, tools: readonly OfferedTool[]): OfferedTool | undefined {
  let best: OfferedTool | undefined;
  let bestAt = Number.POSITIVE_INFINITY;
  for (const tool of tools) {
    const at = indexOfWord(text, tool.name);
    if (at < 0) continue;
    if (at < bestAt || (at === bestAt && best !== undefined && tool.name.length > best.name.length)) {
      best = tool;
      bestAt = at;
    }
  }
  return best;
}

const NAME_CHAR = /[A-Za-z0-9_-]/;

function indexOfWord(text: string, word: string): number {
  if (word === '') return -1;
  for (let at = text.indexOf(word); at >= 0; at = text.indexOf(word, at + 1)) {
    const before = text[at - 1];
    const after = text[at + word.length];
    if (
      (before === undefined || !NAME_CHAR.test(before)) &&
      (after === undefined || !NAME_CHAR.test(after))
    ) {
      return at;
    }
  }
  return -1;
}

const ARGUMENT = /(?<![A-Za-z0-9_.-])([A-Za-z_][A-Za-z0-9_.-]*)=("[^"]*"|'[^']*'|\S+)/g;
const NUMBER = /^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$/;
const TRAILING_PUNCTUATION = /[,;.!?]+$/;

/**
 * `key=value` pairs from free text. Quoted values stay strings; unquoted ones lose trailing punctuation and become
 * numbers when numeric (unless the schema says string) or booleans when the schema says boolean.
 */
export function parseToolArguments(
  text: string,
  properties: Readonly<Record<string, unknown>> | undefined,
): Record<string, unknown> {
  const args: Record<string, unknown> = {};
  for (const match of text.matchAll(ARGUMENT)) {
    const key = match[1] as string;
    const raw = match[2] as string;
    if (properties !== undefined && !Object.hasOwn(properties, key)) continue;
    args[key] = convertArgument(raw, schemaTypes(properties?.[key]));
  }
  return args;
}

function convertArgument(raw: string, types: readonly string[]): unknown {
  const first = raw[0];
  if ((first === '"' || first === "'") && raw.length >= 2 && raw.endsWith(first)) return raw.slice(1, -1);
  const value = raw.replace(TRAILING_PUNCTUATION, '') || raw;
  if (types.includes('boolean') && (value === 'true' || value === 'false')) return value === 'true';
  if (types.includes('string') && !types.includes('number') && !types.includes('integer')) return value;
  if (NUMBER.test(value)) return Number(value);
  return value;
}

function schemaTypes(schema: unknown): readonly string[] {
  if (!isRecord(schema)) return [];
  const type = schema['type'];
  if (typeof type === 'string') return [type];
  if (Array.isArray(type)) return type.filter((t): t is string => typeof t === 'string');
  return [];
}

function firstChars(text: string, count: number): string {
  // By code point, so a cut never splits a surrogate pair.
  return Array.from(text).slice(0, count).join('');
}

// ---------------------------------------------------------------------------------------------------------------
// Token accounting: crude on purpose, so a gateway's accounting can be asserted exactly.

/** ceil(characters / 4). */
export function countTokens(text: string): number {
  return Math.ceil(text.length / 4);
}

/** Input tokens of a request body: ceil((JSON length of `messages` + `system` + `tools`, each when present) / 4). */
export function countInputTokens(body: unknown): number {
  if (!isRecord(body)) return 0;
  let length = 0;
  for (const field of ['messages', 'system', 'tools'] as const) {
    const value = body[field];
    if (value !== undefined) length += JSON.stringify(value).length;
  }
  return Math.ceil(length / 4);
}

/** Output tokens of a reply: the text, or the JSON of the tool arguments, counted as ceil(characters / 4). */
export function countOutputTokens(reply: Reply): number {
  return countTokens(reply.kind === 'text' ? reply.text : JSON.stringify(reply.input));
}

// ---------------------------------------------------------------------------------------------------------------
// Vendor formats

type FailureKind =
  | 'invalid_request'
  | 'authentication'
  | 'not_found'
  | 'method_not_allowed'
  | 'too_large'
  | 'rate_limit'
  | 'server_error';

interface ApiFailure {
  readonly failure: FailureKind;
  readonly message: string;
  readonly param?: string;
  readonly code?: string;
}

const FAILURE_STATUS: Readonly<Record<FailureKind, number>> = {
  invalid_request: 400,
  authentication: 401,
  not_found: 404,
  method_not_allowed: 405,
  too_large: 413,
  rate_limit: 429,
  server_error: 500,
};

/** A call both vendors agree on after parsing. */
interface ParsedCall {
  readonly model: string;
  readonly stream: boolean;
  /** OpenAI `stream_options.include_usage`. */
  readonly includeUsage: boolean;
  readonly turn: Turn;
}

/** Everything decided about one answer, so the vendor writers only format. */
interface Answer {
  readonly call: ParsedCall;
  readonly reply: Reply;
  readonly messageId: string;
  readonly toolCallId: string;
  /** Unix seconds. */
  readonly created: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
}

interface SseEvent {
  readonly event?: string;
  readonly data: string;
}

type HeaderMap = Readonly<Record<string, string>>;

interface VendorApi {
  readonly requestIdHeader: string;
  readonly idPrefix: { readonly message: string; readonly toolCall: string };
  authenticate(headers: HeaderMap, key: string): ApiFailure | undefined;
  parse(body: unknown, headers: HeaderMap): ParsedCall | ApiFailure;
  errorBody(failure: ApiFailure, requestId: string): unknown;
  response(answer: Answer): unknown;
  events(answer: Answer): SseEvent[];
}

// --- Anthropic Messages ---------------------------------------------------------------------------------------

const ANTHROPIC_ERROR_TYPE: Readonly<Record<FailureKind, string>> = {
  invalid_request: 'invalid_request_error',
  authentication: 'authentication_error',
  not_found: 'not_found_error',
  method_not_allowed: 'invalid_request_error',
  too_large: 'request_too_large',
  rate_limit: 'rate_limit_error',
  server_error: 'api_error',
};

const anthropic: VendorApi = {
  requestIdHeader: 'request-id',
  idPrefix: { message: 'msg_stub_', toolCall: 'toolu_stub_' },

  // The API takes `x-api-key`; @anthropic-ai/sdk 1.x sends `Authorization: Bearer` instead. Every credential
  // present must match, so a gateway that injects one header but forwards the agent's other one is caught.
  authenticate(headers, key) {
    const given = [headers['x-api-key'], bearerToken(headers)].filter((k) => k !== undefined);
    if (given.length === 0) return { failure: 'authentication', message: 'x-api-key header is required' };
    if (given.some((k) => k !== key)) return { failure: 'authentication', message: 'invalid x-api-key' };
    return undefined;
  },

  parse(body, headers) {
    if (headers['anthropic-version'] === undefined) {
      return invalidRequest('anthropic-version: header is required');
    }
    if (!isRecord(body)) return invalidRequest('Request body must be a JSON object.');
    const model = body['model'];
    if (typeof model !== 'string' || model === '') return invalidRequest('model: Field required');
    const maxTokens = body['max_tokens'];
    if (typeof maxTokens !== 'number' || !Number.isInteger(maxTokens) || maxTokens < 1) {
      return invalidRequest('max_tokens: Field required');
    }
    const messages = body['messages'];
    if (!Array.isArray(messages) || messages.length === 0) return invalidRequest('messages: Field required');

    const lastUser = findLast(messages, (m) => isRecord(m) && m['role'] === 'user');
    const content = isRecord(lastUser) ? lastUser['content'] : undefined;
    const results = Array.isArray(content)
      ? content.filter((b) => isRecord(b) && b['type'] === 'tool_result').map((b) => textOf(b['content']))
      : [];
    const turn: Turn = {
      userText: textOf(content),
      toolResult: results.length > 0 ? results.join('\n') : undefined,
      tools: asArray(body['tools']).flatMap((t) =>
        isRecord(t) && typeof t['name'] === 'string' ? [offeredTool(t['name'], t['input_schema'])] : [],
      ),
      toolChoice: anthropicToolChoice(body['tool_choice']),
    };
    return checkToolChoice(turn) ?? { model, stream: body['stream'] === true, includeUsage: false, turn };
  },

  errorBody(failure, requestId) {
    return {
      type: 'error',
      error: { type: ANTHROPIC_ERROR_TYPE[failure.failure], message: failure.message },
      request_id: requestId,
    };
  },

  response(answer) {
    return {
      ...anthropicMessageHead(answer),
      content: [anthropicBlock(answer)],
      stop_reason: answer.reply.kind === 'text' ? 'end_turn' : 'tool_use',
      stop_sequence: null,
      usage: { input_tokens: answer.inputTokens, output_tokens: answer.outputTokens },
    };
  },

  events(answer) {
    const { reply } = answer;
    const events: SseEvent[] = [];
    const send = (data: { readonly type: string } & Record<string, unknown>): void => {
      events.push({ event: data.type, data: JSON.stringify(data) });
    };
    // Like the API, message_start reports output_tokens 1; message_delta carries the final cumulative count.
    send({
      type: 'message_start',
      message: {
        ...anthropicMessageHead(answer),
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: answer.inputTokens, output_tokens: 1 },
      },
    });
    const block = anthropicBlock(answer);
    send({
      type: 'content_block_start',
      index: 0,
      content_block: block.type === 'text' ? { type: 'text', text: '' } : { ...block, input: {} },
    });
    send({ type: 'ping' });
    if (reply.kind === 'text') {
      for (const text of wordPieces(reply.text)) {
        send({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text } });
      }
    } else {
      for (const partial of ['', ...fixedPieces(JSON.stringify(reply.input), STREAM_JSON_PIECE_CHARS)]) {
        send({
          type: 'content_block_delta',
          index: 0,
          delta: { type: 'input_json_delta', partial_json: partial },
        });
      }
    }
    send({ type: 'content_block_stop', index: 0 });
    send({
      type: 'message_delta',
      delta: { stop_reason: reply.kind === 'text' ? 'end_turn' : 'tool_use', stop_sequence: null },
      usage: { output_tokens: answer.outputTokens },
    });
    send({ type: 'message_stop' });
    return events;
  },
};

function anthropicMessageHead(answer: Answer): Record<string, unknown> {
  return { id: answer.messageId, type: 'message', role: 'assistant', model: answer.call.model };
}

function anthropicBlock(answer: Answer): { readonly type: string } & Record<string, unknown> {
  const { reply } = answer;
  if (reply.kind === 'text') return { type: 'text', text: reply.text };
  return { type: 'tool_use', id: answer.toolCallId, name: reply.name, input: reply.input };
}

function anthropicToolChoice(choice: unknown): ToolChoice {
  if (!isRecord(choice)) return { mode: 'auto' };
  switch (choice['type']) {
    case 'any':
      return { mode: 'any' };
    case 'none':
      return { mode: 'none' };
    case 'tool':
      return typeof choice['name'] === 'string' ? { mode: 'tool', name: choice['name'] } : { mode: 'auto' };
    default:
      return { mode: 'auto' };
  }
}

// --- OpenAI Chat Completions ----------------------------------------------------------------------------------

const OPENAI_ERROR_TYPE: Readonly<Record<FailureKind, string>> = {
  invalid_request: 'invalid_request_error',
  authentication: 'invalid_request_error',
  not_found: 'invalid_request_error',
  method_not_allowed: 'invalid_request_error',
  too_large: 'invalid_request_error',
  rate_limit: 'requests',
  server_error: 'server_error',
};

const openai: VendorApi = {
  requestIdHeader: 'x-request-id',
  idPrefix: { message: 'chatcmpl-stub', toolCall: 'call_stub_' },

  authenticate(headers, key) {
    const given = bearerToken(headers);
    if (given === undefined) {
      return {
        failure: 'authentication',
        message:
          "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
      };
    }
    if (given !== key) {
      return { failure: 'authentication', message: 'Incorrect API key provided.', code: 'invalid_api_key' };
    }
    return undefined;
  },

  parse(body) {
    if (!isRecord(body)) return invalidRequest('Request body must be a JSON object.');
    const model = body['model'];
    if (typeof model !== 'string' || model === '') {
      return invalidRequest('you must provide a model parameter', 'model');
    }
    const messages = body['messages'];
    if (!Array.isArray(messages) || messages.length === 0) {
      return invalidRequest("[] is too short - 'messages'", 'messages');
    }

    const trailingToolMessages: unknown[] = [];
    for (let i = messages.length - 1; i >= 0; i--) {
      const message: unknown = messages[i];
      if (!isRecord(message) || message['role'] !== 'tool') break;
      trailingToolMessages.unshift(message['content']);
    }
    const lastUser = findLast(messages, (m) => isRecord(m) && m['role'] === 'user');
    const turn: Turn = {
      userText: isRecord(lastUser) ? textOf(lastUser['content']) : '',
      toolResult: trailingToolMessages.length > 0 ? trailingToolMessages.map(textOf).join('\n') : undefined,
      tools: asArray(body['tools']).flatMap((t) => {
        const fn = isRecord(t) && t['type'] === 'function' ? t['function'] : undefined;
        return isRecord(fn) && typeof fn['name'] === 'string'
          ? [offeredTool(fn['name'], fn['parameters'])]
          : [];
      }),
      toolChoice: openaiToolChoice(body['tool_choice']),
    };
    const streamOptions = body['stream_options'];
    return (
      checkToolChoice(turn) ?? {
        model,
        stream: body['stream'] === true,
        includeUsage: isRecord(streamOptions) && streamOptions['include_usage'] === true,
        turn,
      }
    );
  },

  errorBody(failure) {
    const code = failure.code ?? (failure.failure === 'rate_limit' ? 'rate_limit_exceeded' : null);
    return {
      error: {
        message: failure.message,
        type: OPENAI_ERROR_TYPE[failure.failure],
        param: failure.param ?? null,
        code,
      },
    };
  },

  response(answer) {
    const { reply } = answer;
    const message =
      reply.kind === 'text'
        ? { role: 'assistant', content: reply.text, refusal: null }
        : {
            role: 'assistant',
            content: null,
            refusal: null,
            tool_calls: [
              {
                id: answer.toolCallId,
                type: 'function',
                function: { name: reply.name, arguments: JSON.stringify(reply.input) },
              },
            ],
          };
    return {
      ...openaiHead(answer, 'chat.completion'),
      choices: [{ index: 0, message, logprobs: null, finish_reason: openaiFinishReason(reply) }],
      usage: openaiUsage(answer),
    };
  },

  events(answer) {
    const { reply, call } = answer;
    const head = openaiHead(answer, 'chat.completion.chunk');
    // With include_usage, every chunk carries `usage: null` until the final usage-only chunk.
    const usageField = call.includeUsage ? { usage: null } : {};
    const chunk = (delta: Record<string, unknown>, finishReason: string | null): SseEvent => ({
      data: JSON.stringify({
        ...head,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finishReason }],
        ...usageField,
      }),
    });
    const events: SseEvent[] = [];
    if (reply.kind === 'text') {
      events.push(chunk({ role: 'assistant', content: '', refusal: null }, null));
      for (const content of wordPieces(reply.text)) events.push(chunk({ content }, null));
    } else {
      const opening = {
        index: 0,
        id: answer.toolCallId,
        type: 'function',
        function: { name: reply.name, arguments: '' },
      };
      events.push(chunk({ role: 'assistant', content: null, refusal: null, tool_calls: [opening] }, null));
      for (const piece of fixedPieces(JSON.stringify(reply.input), STREAM_JSON_PIECE_CHARS)) {
        events.push(chunk({ tool_calls: [{ index: 0, function: { arguments: piece } }] }, null));
      }
    }
    events.push(chunk({}, openaiFinishReason(reply)));
    if (call.includeUsage)
      events.push({ data: JSON.stringify({ ...head, choices: [], usage: openaiUsage(answer) }) });
    events.push({ data: '[DONE]' });
    return events;
  },
};

function openaiHead(answer: Answer, object: string): Record<string, unknown> {
  return { id: answer.messageId, object, created: answer.created, model: answer.call.model };
}

function openaiUsage(answer: Answer): Record<string, number> {
  return {
    prompt_tokens: answer.inputTokens,
    completion_tokens: answer.outputTokens,
    total_tokens: answer.inputTokens + answer.outputTokens,
  };
}

// The API answers "stop" when tool_choice names a function; the stub says "tool_calls" whenever it calls one,
// which is what gateways and agents branch on.
function openaiFinishReason(reply: Reply): string {
  return reply.kind === 'text' ? 'stop' : 'tool_calls';
}

function openaiToolChoice(choice: unknown): ToolChoice {
  if (choice === 'none') return { mode: 'none' };
  if (choice === 'required') return { mode: 'any' };
  if (isRecord(choice) && choice['type'] === 'function') {
    const fn = choice['function'];
    if (isRecord(fn) && typeof fn['name'] === 'string') return { mode: 'tool', name: fn['name'] };
  }
  return { mode: 'auto' };
}

// --- shared parsing helpers -----------------------------------------------------------------------------------

function offeredTool(name: string, schema: unknown): OfferedTool {
  const properties = isRecord(schema) && isRecord(schema['properties']) ? schema['properties'] : undefined;
  return { name, properties };
}

function checkToolChoice(turn: Turn): ApiFailure | undefined {
  const { toolChoice, tools } = turn;
  if ((toolChoice.mode === 'any' || toolChoice.mode === 'tool') && tools.length === 0) {
    return invalidRequest('tool_choice may only be specified while providing tools.', 'tool_choice');
  }
  if (toolChoice.mode === 'tool' && !tools.some((t) => t.name === toolChoice.name)) {
    return invalidRequest(
      `tool_choice names tool '${toolChoice.name}', which is not in tools.`,
      'tool_choice',
    );
  }
  return undefined;
}

function bearerToken(headers: HeaderMap): string | undefined {
  return /^Bearer (.+)$/i.exec(headers['authorization'] ?? '')?.[1];
}

function invalidRequest(message: string, param?: string): ApiFailure {
  return param === undefined
    ? { failure: 'invalid_request', message }
    : { failure: 'invalid_request', message, param };
}

/** Text of a message content: a string, or the `text` of its text blocks / parts joined by newlines. */
function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  return asArray(content)
    .flatMap((part) =>
      isRecord(part) && part['type'] === 'text' && typeof part['text'] === 'string' ? [part['text']] : [],
    )
    .join('\n');
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function asArray(value: unknown): readonly unknown[] {
  return Array.isArray(value) ? value : [];
}

function findLast(items: readonly unknown[], test: (item: unknown) => boolean): unknown {
  for (let i = items.length - 1; i >= 0; i--) if (test(items[i])) return items[i];
  return undefined;
}

/** Words with their trailing whitespace: how the stub streams text. */
function wordPieces(text: string): string[] {
  return text.match(/\s*\S+\s*/g) ?? (text === '' ? [] : [text]);
}

function fixedPieces(text: string, size: number): string[] {
  const points = Array.from(text);
  const pieces: string[] = [];
  for (let i = 0; i < points.length; i += size) pieces.push(points.slice(i, i + size).join(''));
  return pieces;
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP

interface StubState {
  readonly requireApiKey: string | undefined;
  readonly recordLimit: number;
  readonly now: () => number;
  readonly requests: RecordedRequest[];
  answerSeq: number;
  requestSeq: number;
}

export async function startModelStub(opts: ModelStubOptions = {}): Promise<ModelStub> {
  const host = opts.host ?? '127.0.0.1';
  const state: StubState = {
    requireApiKey: opts.requireApiKey,
    recordLimit: opts.recordLimit ?? DEFAULT_RECORD_LIMIT,
    now: opts.now ?? Date.now,
    requests: [],
    answerSeq: 0,
    requestSeq: 0,
  };
  const server = createServer((req, res) => {
    handle(state, req, res).catch(() => {
      // A client that vanished mid-request, or a bug: never leave the socket hanging.
      if (!res.headersSent)
        sendFailure(res, anthropic, { failure: 'server_error', message: 'Internal server error' }, '');
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return closing;
  };
  return {
    url: `http://${urlHost(host)}:${port}`,
    port,
    requests: state.requests,
    close,
    [Symbol.asyncDispose]: close,
  };
}

function urlHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}

async function handle(state: StubState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const closed = new AbortController();
  res.once('close', () => closed.abort());

  const raw = await readBody(req);
  const method = req.method ?? 'GET';
  const path = new URL(req.url ?? '/', 'http://stub').pathname;
  const headers = flattenHeaders(req.headers);
  const body = parseJson(raw.text);
  if (state.recordLimit > 0) {
    state.requests.push({ method, path, headers, body, rawBody: raw.text });
    if (state.requests.length > state.recordLimit)
      state.requests.splice(0, state.requests.length - state.recordLimit);
  }
  const requestId = `req_stub_${pad(++state.requestSeq)}`;

  if (path === '/health') {
    if (method === 'GET' || method === 'HEAD') return sendJson(res, 200, { status: 'ok' }, {});
    return sendFailure(
      res,
      guessVendor(headers),
      { failure: 'method_not_allowed', message: 'Use GET.' },
      requestId,
    );
  }
  const vendor = path === '/v1/messages' ? anthropic : path === '/v1/chat/completions' ? openai : undefined;
  if (vendor === undefined) {
    const failure: ApiFailure = { failure: 'not_found', message: `Invalid URL (${method} ${path})` };
    return sendFailure(res, guessVendor(headers), failure, requestId);
  }
  const fail = (failure: ApiFailure): void => sendFailure(res, vendor, failure, requestId);
  if (method !== 'POST')
    return fail({ failure: 'method_not_allowed', message: `Method ${method} not allowed.` });
  if (raw.tooLarge)
    return fail({ failure: 'too_large', message: 'Request exceeds the maximum allowed size.' });
  if (state.requireApiKey !== undefined) {
    const refused = vendor.authenticate(headers, state.requireApiKey);
    if (refused) return fail(refused);
  }
  if (body === undefined) return fail(invalidRequest('Request body is not valid JSON.'));
  const call = vendor.parse(body, headers);
  if ('failure' in call) return fail(call);

  switch (call.model) {
    case STUB_FAULT_MODELS.error500:
      return fail({ failure: 'server_error', message: 'Internal server error (stub-error-500).' });
    case STUB_FAULT_MODELS.error429:
      return fail({ failure: 'rate_limit', message: 'Rate limit reached for requests (stub-error-429).' });
    case STUB_FAULT_MODELS.reset:
      req.socket.destroy();
      return;
    case STUB_FAULT_MODELS.slow:
      if (!(await pause(delayFrom(headers, STUB_HEADERS.delayMs, DEFAULT_SLOW_DELAY_MS), closed.signal)))
        return;
      break;
  }

  const reply = decideReply(call.turn);
  const seq = pad(++state.answerSeq);
  const answer: Answer = {
    call,
    reply,
    messageId: vendor.idPrefix.message + seq,
    toolCallId: vendor.idPrefix.toolCall + seq,
    created: Math.floor(state.now() / 1000),
    inputTokens: countInputTokens(body),
    outputTokens: countOutputTokens(reply),
  };
  const idHeader = { [vendor.requestIdHeader]: requestId };
  if (!call.stream) return sendJson(res, 200, vendor.response(answer), idHeader);

  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    ...idHeader,
  });
  const chunkDelay = delayFrom(headers, STUB_HEADERS.chunkDelayMs, 0);
  for (const [i, event] of vendor.events(answer).entries()) {
    if (i > 0 && chunkDelay > 0 && !(await pause(chunkDelay, closed.signal))) return;
    if (closed.signal.aborted) return;
    res.write(`${event.event === undefined ? '' : `event: ${event.event}\n`}data: ${event.data}\n\n`);
  }
  res.end();
}

/** The one place a failure becomes an HTTP response. */
function sendFailure(res: ServerResponse, vendor: VendorApi, failure: ApiFailure, requestId: string): void {
  const headers: Record<string, string> = { [vendor.requestIdHeader]: requestId };
  if (failure.failure === 'rate_limit') headers['retry-after'] = '1';
  sendJson(res, FAILURE_STATUS[failure.failure], vendor.errorBody(failure, requestId), headers);
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string>): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** Errors on unknown paths follow whichever vendor the headers suggest. */
function guessVendor(headers: HeaderMap): VendorApi {
  return headers['x-api-key'] !== undefined || headers['anthropic-version'] !== undefined
    ? anthropic
    : openai;
}

async function readBody(req: IncomingMessage): Promise<{ text: string; tooLarge: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    // Keep draining past the limit so the 413 can still be written on this connection.
    if (size <= MAX_BODY_BYTES) chunks.push(chunk);
  }
  const tooLarge = size > MAX_BODY_BYTES;
  return { text: tooLarge ? '' : Buffer.concat(chunks).toString('utf8'), tooLarge };
}

function parseJson(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function flattenHeaders(headers: IncomingHttpHeaders): HeaderMap {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return flat;
}

function delayFrom(headers: HeaderMap, name: string, fallback: number): number {
  const value = Number(headers[name]);
  return headers[name] !== undefined && Number.isFinite(value) && value >= 0
    ? Math.min(value, MAX_DELAY_MS)
    : fallback;
}

/** Waits, unless the client goes away first; true when the wait completed. */
async function pause(ms: number, signal: AbortSignal): Promise<boolean> {
  try {
    await sleep(ms, undefined, { signal });
    return true;
  } catch {
    return false;
  }
}

function pad(n: number): string {
  return String(n).padStart(6, '0');
}
