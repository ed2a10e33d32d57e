// What the gateway needs to know about one vendor's wire format: tools, limits, usage, streaming and errors.
import type { IncomingHttpHeaders } from 'node:http';
import type { ErrorCode } from '../errors.ts';
import type { SseEvent } from './sse.ts';
import type { TokenUsage } from './usage.ts';

export type Provider = 'anthropic' | 'openai';

export type JsonObject = Record<string, unknown>;

/** Which tool names the policy could ever allow this agent to call. */
export type MayExpose = (tool: string) => boolean;

export type ToolsMode = 'strip' | 'reject';

/** Why a request was refused for its tools. Audit reasons, never shown to the agent. */
export type ToolRefusal = 'tool_choice_forbidden_tool' | 'tools_forbidden';

export interface ToolFilter {
  /** Tool names offered by the agent, in order (an entry without a usable name counts as ""). */
  readonly before: readonly string[];
  /** What goes upstream. */
  readonly after: readonly string[];
  /** Set when the request must be refused instead. */
  readonly refusal?: ToolRefusal;
  /** The body to forward when tools were removed; undefined when nothing changed. */
  readonly body?: JsonObject;
}

export interface Prepared {
  /** The body to forward when the gateway changed it; undefined when the agent's bytes go as they are. */
  readonly body?: JsonObject;
  /** Output tokens the call may produce at most (already multiplied by the number of choices). */
  readonly maxOutputTokens: number;
  /** The gateway asked for a usage-only final chunk the agent did not ask for, so it must not reach the agent. */
  readonly injectedUsageChunk: boolean;
  /**
   * Images, documents, files and audio in the prompt. What they cost is not in the body's bytes (one fetched by
   * URL or file id is a few bytes), so the input estimate adds a fixed ceiling for each.
   */
  readonly mediaItems: number;
}

export interface PrepareOptions {
  /** Used when the request names no output limit. */
  readonly defaultMaxTokens: number;
  /** A budget is in force: a request without an output limit gets `defaultMaxTokens`, so its reservation bounds it. */
  readonly capOutput: boolean;
}

/** Follows one streamed response's events. */
export interface StreamTap {
  /** Looks at an event; false drops it (only ever the usage chunk the gateway itself asked for). */
  onEvent(event: SseEvent): boolean;
  /** The complete usage, once the stream has reported it; undefined while it has not. */
  usage(): TokenUsage | undefined;
}

export interface VendorError {
  readonly status: number;
  readonly code: ErrorCode;
  readonly message: string;
}

export interface VendorAdapter {
  readonly provider: Provider;
  /** Mount point on the agent listener. */
  readonly prefix: `/${Provider}`;
  /** The one path served under the prefix; the same path is used upstream, after the upstream's base path. */
  readonly path: string;
  readonly defaultUpstream: string;
  readonly defaultKeyEnv: string;
  /** The header that carries the key upstream. */
  keyHeader(key: string): readonly [string, string];
  /**
   * Fields that bound what a call may produce (output tokens, number of answers). When present, each must be a
   * positive integer: a value the gateway cannot read ("200000") would be reserved at the default while the vendor
   * might read it as written.
   */
  readonly limitFields: readonly string[];
  filterTools(body: JsonObject, mayExpose: MayExpose, mode: ToolsMode): ToolFilter;
  /**
   * The first feature the request (as it will be forwarded) switches on that the vendor bills outside the price table:
   * a dearer rate, a fee per use, or extra passes. A stable name for the audit; undefined when there is none.
   */
  unpricedFeature(body: JsonObject, headers: IncomingHttpHeaders): string | undefined;
  /** Output limit and streaming usage: what the gateway adds before forwarding. */
  prepare(body: JsonObject, opts: PrepareOptions): Prepared;
  usageFromJson(json: unknown): TokenUsage | undefined;
  /** Tool names in a complete (non-streamed) response. */
  toolCallsFromJson(json: unknown): string[];
  streamTap(opts: {
    readonly dropUsageChunk: boolean;
    readonly onToolCall: (name: string) => void;
  }): StreamTap;
  /** A complete error body in the vendor's format. */
  errorBody(e: VendorError): string;
  /** An error as one SSE event, for a stream that fails after it started. */
  errorEvent(e: VendorError): string;
}

export function isObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Present and not null: a null field means the same to the vendors as an absent one. */
export function isSet(v: unknown): boolean {
  return v !== undefined && v !== null;
}

export function stringField(o: unknown, key: string): string | undefined {
  if (!isObject(o)) return undefined;
  const v = o[key];
  return typeof v === 'string' ? v : undefined;
}

/** A positive integer, or undefined. */
export function positiveInt(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

/** The first of `fields` that is present (and not null) but not a positive integer; undefined when all are fine. */
export function invalidLimit(body: JsonObject, fields: readonly string[]): string | undefined {
  return fields.find((f) => body[f] !== undefined && body[f] !== null && positiveInt(body[f]) === undefined);
}

/** Splits `items` by whether `mayExpose` allows their name. */
export function partition(
  items: readonly unknown[],
  nameOf: (item: unknown) => string,
  mayExpose: MayExpose,
): { names: string[]; kept: unknown[]; removed: string[] } {
  const names: string[] = [];
  const kept: unknown[] = [];
  const removed: string[] = [];
  for (const item of items) {
    const name = nameOf(item);
    names.push(name);
    if (name !== '' && mayExpose(name)) kept.push(item);
    else removed.push(name);
  }
  return { names, kept, removed };
}

const USAGE_OBJECT = /"usage"\s*:\s*\{/;
const NAME_FIELD = /"name"\s*:/;

/** Cheap pre-checks so most streamed chunks are never JSON-parsed. */
export const mightCarry = {
  usage: (data: string) => USAGE_OBJECT.test(data),
  name: (data: string) => NAME_FIELD.test(data),
};

export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
