// One upstream MCP tool server: its session (SDK client), its tool list, and signed, bounded, strictly parsed calls.

import type { IncomingHttpHeaders } from 'node:http';
import { Readable } from 'node:stream';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import type { CallToolResult, Tool } from '@modelcontextprotocol/sdk/types.js';
import { CallToolResultSchema, McpError } from '@modelcontextprotocol/sdk/types.js';
import type { Logger } from 'pino';
import { Agent, type Dispatcher } from 'undici';
import { type ErrorCode, SidecarError } from '../errors.ts';
import { CONTEXT_HEADER } from '../identity/context-token.ts';
import { isPlainObject } from '../policy/action.ts';
import { parseStrictJson } from '../server/strict-json.ts';
import { DEFAULT_UPSTREAM_TIMEOUT_MS, type UpstreamConfig } from './config.ts';

export const GATEWAY_NAME = 'agent-sidecar';
export const GATEWAY_VERSION = '0.1.0';
const MAX_LIST_PAGES = 100;

type FetchLike = (url: string | URL, init?: RequestInit) => Promise<Response>;

/** What the gateway vouches for on one forwarded call; the upstream's own tool name, never the exposed one. */
export interface SignedCall {
  /** The upstream's own audience (McpUpstream.audience): a token for one upstream is refused by another. */
  readonly audience: string;
  readonly decisionId: string;
  readonly sub: string | null;
  readonly tool: string;
  readonly args: unknown;
}

export interface ContextSigner {
  /** Synchronous: the token is signed inline on the hot path (see mintContextTokenSync). */
  mint(call: SignedCall): string;
}

export interface CallOptions {
  readonly decisionId: string;
  readonly sub: string | null;
  /** The agent went away: abort the upstream request and tell the upstream (notifications/cancelled). */
  readonly signal?: AbortSignal;
}

export interface UpstreamDeps {
  readonly signer: ContextSigner;
  /** The sidecar-wide context audience (`context.audience` or its default), for an upstream without its own. */
  readonly defaultAudience: string;
  readonly maxMessageBytes: number;
  readonly logger: Logger;
}

interface Session {
  readonly client: Client;
  readonly transport: StreamableHTTPClientTransport;
}

/** One HTTP exchange, as far as the gateway lets it through. */
type Exchange =
  | { readonly kind: 'accepted' }
  | { readonly kind: 'response'; readonly message: Record<string, unknown>; readonly sessionId?: string };

/** The upstream dropped our session (404 on a request that carried one): reconnect and send again. */
class SessionExpired extends SidecarError {
  readonly sessionExpired = true;
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });
const TIMEOUT_CODES = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
]);
const HTTP_FRAMING = /^(HPE_|UND_ERR_RES_|UND_ERR_INFO)/;

/**
 * The SDK client owns the session: initialize and version negotiation, `Mcp-Session-Id`, `MCP-Protocol-Version`,
 * tools/list with its pagination. Every byte it exchanges goes through `#send` (its transport's fetch), which
 * bounds, strictly parses and reduces each answer to the one JSON-RPC response it must contain; redirects, the
 * standalone GET stream and stream resumption are declined, and no tools/call may pass that way unsigned.
 * tools/call itself, the hot path, is one `#send` on that session with a context token minted for exactly that
 * call, and the result is checked against the SDK's own CallToolResult schema: the same checks without the SDK's
 * WHATWG Response and per-message schema round trips (about 0.2 ms of CPU per call).
 */
export class McpUpstream {
  readonly name: string;
  readonly namespace: string | undefined;
  /** The `aud` of every context token minted for this upstream: its `audience`, else the sidecar-wide one. */
  readonly audience: string;
  readonly url: string;
  readonly timeoutMs: number;
  /** `url` split once, so no exchange parses it again. */
  readonly #origin: string;
  readonly #path: string;
  readonly #headers: Readonly<Record<string, string>>;
  readonly #deps: UpstreamDeps;
  readonly #dispatcher: Agent;
  #session: Session | undefined;
  #connecting: Promise<Session> | undefined;
  #closed = false;
  #callId = 0;

  constructor(config: UpstreamConfig, deps: UpstreamDeps) {
    this.name = config.name;
    this.namespace = config.namespace;
    this.audience = config.audience ?? deps.defaultAudience;
    this.url = config.url;
    this.timeoutMs = config.timeout_ms ?? DEFAULT_UPSTREAM_TIMEOUT_MS;
    const url = new URL(config.url);
    this.#origin = url.origin;
    this.#path = `${url.pathname}${url.search}`;
    this.#headers = Object.freeze(
      Object.fromEntries(Object.entries(config.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
    );
    this.#deps = deps;
    this.#dispatcher = new Agent({
      keepAliveTimeout: 30_000,
      connect: { timeout: this.timeoutMs },
      allowH2: false,
    });
  }

  /** Every tool the upstream offers, across pages. Throws SidecarError (UPSTREAM_*). */
  async listTools(): Promise<Tool[]> {
    return this.#withSession(async ({ client }) => {
      const tools: Tool[] = [];
      let cursor: string | undefined;
      for (let page = 0; page < MAX_LIST_PAGES; page++) {
        const r = await client.listTools(cursor === undefined ? undefined : { cursor }, {
          timeout: this.timeoutMs + 1_000,
        });
        tools.push(...r.tools);
        if (r.nextCursor === undefined) return tools;
        cursor = r.nextCursor;
      }
      throw new SidecarError(
        'SIDECAR_ERR_UPSTREAM_INVALID',
        `${this.name}: more than ${MAX_LIST_PAGES} pages of tools`,
      );
    });
  }

  /** Forwards one decided call with a context token minted for exactly it. Throws SidecarError (UPSTREAM_*). */
  async callTool(tool: string, args: Record<string, unknown>, opts: CallOptions): Promise<CallToolResult> {
    // The token signs the arguments object that is serialised below: what is signed is what is sent.
    const token = this.#deps.signer.mint({
      audience: this.audience,
      decisionId: opts.decisionId,
      sub: opts.sub,
      tool,
      args,
    });
    return this.#withSession(async (session) => {
      // Ids of our own, apart from the SDK's numeric ones on the same session.
      const id = `gw-${++this.#callId}`;
      const body = JSON.stringify({
        jsonrpc: '2.0',
        id,
        method: 'tools/call',
        params: { name: tool, arguments: args },
      });
      const headers: Record<string, string> = {
        ...this.#headers,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
        [CONTEXT_HEADER]: token,
      };
      const sid = session.transport.sessionId;
      if (sid !== undefined) headers['mcp-session-id'] = sid;
      const version = session.transport.protocolVersion;
      if (version !== undefined) headers['mcp-protocol-version'] = version;
      const onAbort = () => {
        void session.client
          .notification({
            method: 'notifications/cancelled',
            params: { requestId: id, reason: 'agent went away' },
          })
          .catch(() => undefined);
      };
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      let answer: Exchange;
      try {
        answer = await this.#send('POST', headers, body, id, opts.signal);
      } finally {
        opts.signal?.removeEventListener('abort', onAbort);
      }
      if (answer.kind !== 'response') {
        throw new SidecarError('SIDECAR_ERR_UPSTREAM_INVALID', `${this.name}: no response to tools/call`);
      }
      const { message } = answer;
      if ('error' in message) {
        const code = isPlainObject(message['error']) ? message['error']['code'] : undefined;
        throw new SidecarError(
          'SIDECAR_ERR_UPSTREAM_INVALID',
          `${this.name}: JSON-RPC error ${String(code)}`,
        );
      }
      const result = CallToolResultSchema.safeParse(message['result']);
      if (!result.success) {
        throw new SidecarError(
          'SIDECAR_ERR_UPSTREAM_INVALID',
          `${this.name}: tools/call result does not fit the schema`,
        );
      }
      return result.data;
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    const session = this.#session;
    this.#session = undefined;
    if (session) {
      await session.transport.terminateSession().catch(() => undefined);
      await session.client.close().catch(() => undefined);
    }
    // Anything still in flight after the sidecar's drain is abandoned, not waited for.
    await this.#dispatcher.destroy().catch(() => undefined);
  }

  async #withSession<T>(fn: (session: Session) => Promise<T>): Promise<T> {
    try {
      const session = await this.#connected();
      try {
        return await fn(session);
      } catch (err) {
        if (!(err instanceof SessionExpired)) throw err;
        // The upstream refused the session before doing anything: one fresh session, one more try.
        if (this.#session === session) this.#session = undefined;
        return await fn(await this.#connected());
      }
    } catch (err) {
      throw this.#asSidecarError(err);
    }
  }

  #connected(): Promise<Session> {
    if (this.#closed) return Promise.reject(new SidecarError('SIDECAR_ERR_UPSTREAM_UNREACHABLE', 'closed'));
    if (this.#session) return Promise.resolve(this.#session);
    this.#connecting ??= this.#connect().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  async #connect(): Promise<Session> {
    // No client capabilities: no sampling, roots or elicitation for an upstream to ask the gateway for.
    const client = new Client({ name: GATEWAY_NAME, version: GATEWAY_VERSION }, { capabilities: {} });
    client.onerror = (err) =>
      this.#deps.logger.debug({ upstream: this.name, err: err.message }, 'upstream transport');
    const transport = new StreamableHTTPClientTransport(new URL(this.url), {
      fetch: this.#sdkFetch,
      // No resumption: a broken stream is a failed request, not something to poll for.
      reconnectionOptions: {
        maxRetries: 0,
        initialReconnectionDelay: 1_000,
        maxReconnectionDelay: 1_000,
        reconnectionDelayGrowFactor: 1,
      },
    });
    try {
      await client.connect(transport, { timeout: this.timeoutMs + 1_000 });
    } catch (err) {
      await client.close().catch(() => undefined);
      throw err;
    }
    const session = { client, transport };
    this.#session = session;
    return session;
  }

  /** The SDK transport's fetch: the same bounded, strict exchange, handed back as a Response. */
  #sdkFetch: FetchLike = async (_url, init) => {
    const method = init?.method ?? 'GET';
    // The standalone server stream (and stream resumption) is declined: nothing the gateway acts on arrives there.
    if (method === 'GET') return new Response(null, { status: 405 });
    const headers: Record<string, string> = {};
    new Headers(init?.headers).forEach((value, name) => {
      headers[name] = value;
    });
    Object.assign(headers, this.#headers);
    delete headers[CONTEXT_HEADER];
    const body = typeof init?.body === 'string' ? init.body : undefined;
    const sent = body === undefined ? undefined : sentMessage(body);
    if (sent?.method === 'tools/call') {
      throw new SidecarError('SIDECAR_ERR_INTERNAL', `${this.name}: tools/call only goes out signed`);
    }
    const answer = await this.#send(method, headers, body, sent?.id, init?.signal ?? undefined);
    if (answer.kind === 'accepted') return new Response(null, { status: method === 'POST' ? 202 : 200 });
    const out: Record<string, string> = { 'content-type': 'application/json' };
    if (answer.sessionId !== undefined) out['mcp-session-id'] = answer.sessionId;
    return new Response(JSON.stringify(answer.message), { status: 200, headers: out });
  };

  /**
   * One bounded exchange on this upstream's pool (undici's dispatch, see AnswerHandler: the body is read and checked
   * here anyway, so WHATWG streams would only add cost). For a request (`sentId`), the answer must hold a JSON-RPC
   * response with that id, strictly parsed, within max_message_bytes; only that response is kept (on an SSE stream,
   * the first one: the stream is closed as soon as it arrives, see readSseResponse).
   */
  async #send(
    method: string,
    headers: Record<string, string>,
    body: string | undefined,
    sentId: string | number | undefined,
    signal: AbortSignal | undefined,
  ): Promise<Exchange> {
    // One timer and one controller per exchange, both released when it ends (AbortSignal.timeout/any would keep a
    // timer and listeners alive for the whole timeout after every call).
    let timedOut = false;
    const head = Promise.withResolvers<Answer>();
    const handler = new AnswerHandler(head.resolve, head.reject);
    const timer = setTimeout(() => {
      timedOut = true;
      handler.abort(abortError());
    }, this.timeoutMs);
    const onAbort = () => handler.abort(abortError());
    if (signal?.aborted) handler.abort(abortError());
    else signal?.addEventListener('abort', onAbort, { once: true });
    try {
      this.#dispatcher.dispatch(
        {
          origin: this.#origin,
          path: this.#path,
          method: method as Dispatcher.HttpMethod,
          headers,
          body: body ?? null,
        },
        handler,
      );
      const res = await head.promise;
      return await this.#read(res, sentId, headers['mcp-session-id'] !== undefined);
    } catch (err) {
      throw classify(err, timedOut, this.name);
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  async #read(res: Answer, sentId: string | number | undefined, hadSession: boolean): Promise<Exchange> {
    const fail = (code: ErrorCode, detail: string) => new SidecarError(code, `${this.name}: ${detail}`);
    const status = res.statusCode;
    const ok = status >= 200 && status < 300;
    if (sentId === undefined) {
      // A notification or a session DELETE: only the status matters.
      await discard(res.body);
      if (!ok) throw fail(statusCode(status), `HTTP ${status} to a notification`);
      return { kind: 'accepted' };
    }
    if (status === 404 && hadSession) {
      await discard(res.body);
      throw new SessionExpired('SIDECAR_ERR_UPSTREAM_UNREACHABLE', `${this.name}: session expired`);
    }
    if (!ok) {
      await discard(res.body);
      throw fail(statusCode(status), `HTTP ${status}`);
    }
    if (status === 202 || status === 204) {
      await discard(res.body);
      throw fail('SIDECAR_ERR_UPSTREAM_INVALID', `HTTP ${status} to a request: no response`);
    }
    const type = mediaType(header(res.headers, 'content-type'));
    if (type !== 'application/json' && type !== 'text/event-stream') {
      await discard(res.body);
      throw fail('SIDECAR_ERR_UPSTREAM_INVALID', `content type ${JSON.stringify(type ?? null)}`);
    }
    const message =
      type === 'application/json'
        ? await readJsonBody(res, sentId, this.#deps.maxMessageBytes, fail)
        : await readSseResponse(res, sentId, this.#deps.maxMessageBytes, fail);
    const sessionId = header(res.headers, 'mcp-session-id');
    return { kind: 'response', message, ...(sessionId === undefined ? {} : { sessionId }) };
  }

  #asSidecarError(err: unknown): SidecarError {
    if (err instanceof SidecarError) return err;
    if (err instanceof McpError) {
      // -32001 from the SDK itself is its request timeout; any other code is the upstream's JSON-RPC error.
      if (err.code === -32001 && isPlainObject(err.data) && 'timeout' in err.data) {
        return new SidecarError('SIDECAR_ERR_UPSTREAM_TIMEOUT', `${this.name}: request timed out`);
      }
      return new SidecarError('SIDECAR_ERR_UPSTREAM_INVALID', `${this.name}: JSON-RPC error ${err.code}`);
    }
    // Schema mismatches (zod) and anything else: the answer cannot be relayed.
    const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    return new SidecarError('SIDECAR_ERR_UPSTREAM_INVALID', `${this.name}: ${detail.slice(0, 300)}`);
  }
}

/** What the SDK is sending: its method and, for a request, the id to match. */
function sentMessage(body: string): { method: string; id?: string | number } | undefined {
  let m: unknown;
  try {
    m = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (!isPlainObject(m) || typeof m['method'] !== 'string') return undefined;
  const id = m['id'];
  return typeof id === 'string' || typeof id === 'number'
    ? { method: m['method'], id }
    : { method: m['method'] };
}

function statusCode(status: number): ErrorCode {
  return status >= 500 ? 'SIDECAR_ERR_UPSTREAM_UNREACHABLE' : 'SIDECAR_ERR_UPSTREAM_INVALID';
}

function mediaType(value: string | undefined): string | undefined {
  return value?.split(';')[0]?.trim().toLowerCase();
}

function header(headers: Answer['headers'], name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

type Fail = (code: ErrorCode, detail: string) => Error;

/** The response to `sentId`, a request from the upstream to us, or anything else (a notification, another id). */
function kindOf(m: unknown, sentId: string | number): 'response' | 'request' | 'other' {
  if (!isPlainObject(m)) return 'other';
  if (m['id'] === sentId && ('result' in m || 'error' in m)) return 'response';
  if (typeof m['method'] === 'string' && m['id'] !== undefined && m['id'] !== null) return 'request';
  return 'other';
}

function tooLarge(res: Answer, max: number): boolean {
  const declared = Number(header(res.headers, 'content-length') ?? Number.NaN);
  return Number.isFinite(declared) && declared > max;
}

/** An `application/json` answer: one message, read whole within the cap, that must be the response. */
async function readJsonBody(
  res: Answer,
  sentId: string | number,
  max: number,
  fail: Fail,
): Promise<Record<string, unknown>> {
  const bytes = await readCapped(res, max);
  if (bytes === undefined)
    throw fail('SIDECAR_ERR_UPSTREAM_INVALID', 'response larger than max_message_bytes');
  let text: string;
  try {
    text = UTF8.decode(bytes);
  } catch {
    throw fail('SIDECAR_ERR_UPSTREAM_INVALID', 'response is not UTF-8');
  }
  const m = strictMessage(text, fail);
  if (kindOf(m, sentId) !== 'response') {
    throw fail('SIDECAR_ERR_UPSTREAM_INVALID', 'no JSON-RPC response to the request');
  }
  return m as Record<string, unknown>;
}

/**
 * A `text/event-stream` answer, read as it arrives: the first response with the request's id ends the read and the
 * stream is closed, whether or not the upstream would have closed it (the spec says it SHOULD, not MUST); anything
 * after it is never read. Notifications and responses to other ids before it are skipped. A request from the
 * upstream (sampling, elicitation, ...) can never be answered, since the gateway offers no client capabilities and
 * the SDK never sees this stream: it fails at once rather than waiting for the timeout. A stream that ends without
 * the response fails too. Every event before the response is parsed strictly; the byte cap counts the whole stream.
 */
async function readSseResponse(
  res: Answer,
  sentId: string | number,
  max: number,
  fail: Fail,
): Promise<Record<string, unknown>> {
  if (tooLarge(res, max)) {
    res.body.destroy();
    throw fail('SIDECAR_ERR_UPSTREAM_INVALID', 'response larger than max_message_bytes');
  }
  try {
    for await (const data of sseEvents(res.body, max, fail)) {
      const m = strictMessage(data, fail);
      const kind = kindOf(m, sentId);
      if (kind === 'response') return m as Record<string, unknown>;
      if (kind === 'request') {
        const method = String((m as Record<string, unknown>)['method']).slice(0, 100);
        throw fail(
          'SIDECAR_ERR_UPSTREAM_INVALID',
          `request ${JSON.stringify(method)} the gateway cannot answer`,
        );
      }
    }
  } finally {
    // Done with the stream, however it went: an open stream is closed here, not left to the timeout.
    res.body.destroy();
  }
  throw fail('SIDECAR_ERR_UPSTREAM_INVALID', 'no JSON-RPC response to the request');
}

function strictMessage(text: string, fail: Fail): unknown {
  const parsed = parseStrictJson(text);
  if (!parsed.ok) throw fail('SIDECAR_ERR_UPSTREAM_INVALID', `unparseable message (${parsed.why})`);
  return parsed.value;
}

async function readCapped(res: Answer, max: number): Promise<Buffer | undefined> {
  if (tooLarge(res, max)) {
    res.body.destroy();
    return undefined;
  }
  // undici enforces a declared length; the count below caps an undeclared one.
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of res.body) {
    total += (chunk as Buffer).length;
    if (total > max) {
      res.body.destroy();
      return undefined;
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * The data of each `message` event of an SSE body as its bytes arrive: strict UTF-8 (a character cut between chunks
 * is fine), at most `max` bytes in all. Stopping the iteration early stops reading the body.
 */
export async function* sseEvents(
  body: AsyncIterable<Uint8Array>,
  max: number,
  fail: Fail,
): AsyncGenerator<string, void, undefined> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  const parser = new SseParser();
  const decode = (chunk?: Uint8Array) => {
    try {
      return chunk === undefined ? decoder.decode() : decoder.decode(chunk, { stream: true });
    } catch {
      throw fail('SIDECAR_ERR_UPSTREAM_INVALID', 'response is not UTF-8');
    }
  };
  let total = 0;
  for await (const chunk of body) {
    total += chunk.length;
    if (total > max) throw fail('SIDECAR_ERR_UPSTREAM_INVALID', 'response larger than max_message_bytes');
    yield* parser.push(decode(chunk));
  }
  yield* parser.push(decode());
  yield* parser.end();
}

/**
 * WHATWG event-stream parsing, fed text in arbitrary pieces: the data of each `message` event (unnamed or named
 * `message`) once its blank line arrives. Events with empty data are skipped; other event types are ignored.
 */
export class SseParser {
  /** Text after the last complete line: no line end in it, except a final CR that may be half of a CRLF. */
  #rest = '';
  #data: string[] = [];
  #type = '';

  push(text: string): string[] {
    const out: string[] = [];
    const buf = this.#rest + text;
    const lineEnd = /\r\n|\r|\n/g;
    lineEnd.lastIndex = Math.max(0, this.#rest.length - 1);
    let start = 0;
    for (let m = lineEnd.exec(buf); m !== null; m = lineEnd.exec(buf)) {
      // A CR at the very end may be followed by LF in the next piece: keep it until then.
      if (m[0] === '\r' && m.index === buf.length - 1) break;
      this.#line(buf.slice(start, m.index), out);
      start = lineEnd.lastIndex;
    }
    this.#rest = buf.slice(start);
    return out;
  }

  /** End of stream. An event not ended by a blank line is incomplete, and is discarded (as the SSE spec says). */
  end(): string[] {
    const out: string[] = [];
    if (this.#rest.endsWith('\r')) this.#line(this.#rest.slice(0, -1), out);
    this.#rest = '';
    this.#data = [];
    this.#type = '';
    return out;
  }

  #line(line: string, out: string[]): void {
    if (line === '') {
      const joined = this.#data.join('\n');
      if (joined !== '' && (this.#type === '' || this.#type === 'message')) out.push(joined);
      this.#data = [];
      this.#type = '';
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data.push(value);
    else if (field === 'event') this.#type = value;
  }
}

/** What an exchange reads of an answer: undici's response head and the body as a Node stream. */
interface Answer {
  readonly statusCode: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Readable;
}

/**
 * undici's dispatch, answering with the response head and a stream of the body. Not undici's request(): a loop of
 * request() calls promoted most of what each call allocated (1.4-2.2 MB per scavenge, 4-5 ms pauses; dispatch: 59
 * KiB, 0.6 ms), and the tool gateway with it (0.9-2 MB, 3.4-5.5 ms on the tools bench). Everything the handler
 * needs is made with it, in its constructor: closures made later, in undici's callbacks, had the same effect on the
 * model gateway's relay.
 */
class AnswerHandler implements Dispatcher.DispatchHandler {
  readonly #answered: (answer: Answer) => void;
  readonly #failed: (err: Error) => void;
  #controller: Dispatcher.DispatchController | undefined;
  #abortReason: Error | undefined;
  #started = false;
  #ended = false;
  readonly #body = new Readable({
    read: () => this.#controller?.resume(),
    destroy: (err, callback) => {
      // The reader is done early (its response found, a cap hit): the rest of the answer is not read.
      if (!this.#ended) this.#controller?.abort(err ?? abortError());
      callback(err);
    },
  });

  constructor(answered: (answer: Answer) => void, failed: (err: Error) => void) {
    this.#answered = answered;
    this.#failed = failed;
  }

  /** Timeout or the agent gone: the request stops wherever it is, and the reader gets `reason`. */
  abort(reason: Error): void {
    this.#abortReason ??= reason;
    this.#controller?.abort(reason);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#abortReason) controller.abort(this.#abortReason);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    if (statusCode < 200) return; // 1xx: interim, the real answer follows
    this.#started = true;
    this.#answered({ statusCode, headers, body: this.#body });
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.#body.push(chunk)) controller.pause();
  }

  onResponseEnd(): void {
    this.#ended = true;
    this.#body.push(null);
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    this.#ended = true;
    if (this.#started) this.#body.destroy(err);
    else this.#failed(err);
  }
}

/** Reads and drops what is left of a body, as undici's dump(): up to 128 KiB, so the connection can be reused. */
async function discard(body: Readable): Promise<void> {
  let read = 0;
  try {
    for await (const chunk of body) {
      read += (chunk as Buffer).length;
      if (read > 128 * 1024) break;
    }
  } catch {
    // Only the status matters to the caller; a body that fails on the way is dropped all the same.
  }
  body.destroy();
}

/** What an AbortController's abort() gives: the same error for a timeout and for an agent gone. */
function abortError(): Error {
  return new DOMException('This operation was aborted', 'AbortError');
}

function classify(err: unknown, timedOut: boolean, name: string): SidecarError {
  if (err instanceof SidecarError) return err;
  const code = innermostCode(err);
  if (timedOut || TIMEOUT_CODES.has(code)) {
    return new SidecarError('SIDECAR_ERR_UPSTREAM_TIMEOUT', `${name}: no answer within the timeout`);
  }
  if (HTTP_FRAMING.test(code)) return new SidecarError('SIDECAR_ERR_UPSTREAM_INVALID', `${name}: ${code}`);
  return new SidecarError('SIDECAR_ERR_UPSTREAM_UNREACHABLE', `${name}: ${code}`);
}

function innermostCode(err: unknown): string {
  let found = err instanceof Error ? err.name : 'unknown';
  let cur: unknown = err;
  // undici wraps socket errors in `cause`: the innermost code says the most.
  for (let depth = 0; depth < 5 && cur instanceof Error; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') found = code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return found;
}
