// Sends one admitted call upstream and relays the answer to the agent as it arrives, reading usage on the way.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Dispatcher, Pool } from 'undici';
import type { ErrorCode } from '../errors.ts';
import { classifyUpstreamError } from '../proxy/upstream-errors.ts';
import type { Verdict } from '../server/enforcer-types.ts';
import { F } from '../server/log-fields.ts';
import type { Metrics } from '../server/metrics.ts';
import { agentResponseHeaders, upstreamRequestHeaders } from './headers.ts';
import { sendVendorError, vendorError } from './respond.ts';
import { type SseEvent, SseSplitter } from './sse.ts';
import type { TokenUsage } from './usage.ts';
import { parseJson, type StreamTap, type VendorAdapter } from './vendor.ts';

// A non-streamed answer is read whole to find its usage; past this it is still relayed, just not accounted exactly.
const MAX_JSON_RESPONSE_BYTES = 64 * 1024 * 1024;
// Vendor error bodies are buffered so the key can be scrubbed from them.
const MAX_ERROR_BYTES = 1024 * 1024;
const REDACTED_BYTES = Buffer.from('[REDACTED]');

/** `body` with every occurrence of `needle` replaced; `body` itself when there is none. */
function replaceBytes(body: Buffer, needle: Buffer, replacement: Buffer): Buffer {
  if (needle.length === 0) return body;
  let at = body.indexOf(needle);
  if (at < 0) return body;
  const parts: Buffer[] = [];
  let from = 0;
  while (at >= 0) {
    parts.push(body.subarray(from, at), replacement);
    from = at + needle.length;
    at = body.indexOf(needle, from);
  }
  parts.push(body.subarray(from));
  return Buffer.concat(parts);
}

/** Where one vendor's calls go. */
export interface Upstream {
  readonly vendor: VendorAdapter;
  readonly pool: Pool;
  /** The upstream URL's path, without a trailing slash; the vendor path is appended. */
  readonly basePath: string;
  readonly key: string | undefined;
}

export interface ForwardDeps {
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export interface ForwardRequest {
  /** The sidecar's key; the caller refuses the call when there is none. */
  readonly key: string;
  readonly path: string;
  readonly payload: Buffer;
  readonly injectedUsageChunk: boolean;
  readonly verdict: Verdict;
  /** Aborted when the agent goes away or the gateway shuts down. */
  readonly signal: AbortSignal;
  readonly onToolCall: (name: string) => void;
}

export interface ForwardOutcome {
  readonly kind: 'forwarded' | 'upstream_error' | 'client_gone';
  readonly status?: number;
  /** Complete usage, when the response reported it. */
  readonly usage?: TokenUsage;
  /**
   * The vendor may have billed the call (a 2xx began, or the whole request went upstream and then the agent left or
   * the upstream timed out or failed before answering), so unknown usage is charged at the reservation.
   */
  readonly billed: boolean;
  readonly errorCode?: ErrorCode;
  readonly upstreamError?: string;
  readonly reason?: string;
}

/**
 * Sends an admitted call upstream and relays the answer as it arrives, reading usage and tool calls on the way.
 * Never rejects: every failure is answered to the agent in the vendor's format and described in the outcome.
 */
export function forwardCall(
  deps: ForwardDeps,
  up: Upstream,
  req: IncomingMessage,
  res: ServerResponse,
  f: ForwardRequest,
): Promise<ForwardOutcome> {
  return new Promise((resolve) => {
    const relay = new Relay(deps, up.vendor, res, f, resolve);
    if (f.signal.aborted) return relay.abort();
    f.signal.addEventListener('abort', relay.abort, { once: true });
    up.pool.dispatch(
      {
        path: f.path,
        method: 'POST',
        headers: upstreamRequestHeaders(req.rawHeaders, req.headers.connection, up.vendor.keyHeader(f.key)),
        body: f.payload,
      },
      relay,
    );
  });
}

const GONE = { kind: 'client_gone', reason: 'client_gone' } as const;

/**
 * An undici dispatch handler that writes straight to the agent's response. Parser callbacks arrive synchronously,
 * so everything one read of the upstream socket carried (headers, events, the end) leaves in one write, at the
 * latest in the microtask after the read. No body stream, no promise per chunk.
 */
class Relay implements Dispatcher.DispatchHandler {
  readonly #deps: ForwardDeps;
  readonly #vendor: VendorAdapter;
  readonly #res: ServerResponse;
  readonly #f: ForwardRequest;
  readonly #resolve: (outcome: ForwardOutcome) => void;
  #controller: Dispatcher.DispatchController | null = null;
  /** head: no response yet; discard: answered already, the rest is ignored; error: buffering a vendor error. */
  #mode: 'head' | 'discard' | 'error' | 'relay' = 'head';
  #done = false;
  #status = 0;
  #headers: IncomingHttpHeaders = {};
  #splitter: SseSplitter | undefined;
  #tap: StreamTap | undefined;
  /**
   * The splitter's event filter, made with the relay. Made per stream in onResponseStart instead (a closure over the
   * tap), it kept every streamed call's objects alive through V8's young-generation collections: measured with
   * `--trace-gc-nvp` on the model benchmark, 0.75-1.5 MB promoted per scavenge and a median scavenge pause of
   * 2-4 ms, against about 11 KB and 0.5 ms this way (as for non-streamed calls and a bare forwarder).
   */
  readonly #keep = (ev: SseEvent): boolean => (this.#tap as StreamTap).onEvent(ev);
  /** Bytes for the agent not written yet, and whether a write of them is queued. */
  #pending: Buffer[] = [];
  #queued = false;
  /** The whole body (JSON answers for their usage, vendor errors for scrubbing), up to its limit. */
  #copy: Buffer[] = [];
  #copied = 0;
  /** Set once the agent went away; a call undici has not started yet is aborted when it starts. */
  #abortReason: Error | undefined;
  /** The whole request reached the upstream socket: from here on the vendor may bill it, answered or not. */
  #sent = false;

  constructor(
    deps: ForwardDeps,
    vendor: VendorAdapter,
    res: ServerResponse,
    f: ForwardRequest,
    resolve: (outcome: ForwardOutcome) => void,
  ) {
    this.#deps = deps;
    this.#vendor = vendor;
    this.#res = res;
    this.#f = f;
    this.#resolve = resolve;
  }

  /** The agent went away (or the gateway is closing): cut the upstream call. */
  readonly abort = (): void => {
    this.#abortReason = new Error('the agent went away');
    // Not started yet: undici aborts it as soon as it would start, and nothing was sent or billed.
    if (this.#controller === null) this.#finish({ ...GONE, billed: false });
    else this.#controller.abort(this.#abortReason);
  };

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#abortReason) controller.abort(this.#abortReason);
  }

  onRequestSent(): void {
    this.#sent = true;
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    if (statusCode < 200) return; // 1xx: interim, the real answer follows
    this.#status = statusCode;
    const vendor = this.#vendor;
    if (statusCode === 401) {
      // The vendor refused the sidecar's own key: the operator's problem, and its message may quote part of the key.
      this.#mode = 'discard';
      this.#deps.logger.error(
        { provider: vendor.provider, [F.status]: statusCode },
        'the upstream refused the configured API key',
      );
      this.#finish(this.#refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'upstream_rejected_key', false));
      return;
    }
    if (statusCode < 400 && statusCode >= 300) {
      // A redirect would hand the agent an upstream URL (and fetch-based SDKs would follow it past the sidecar).
      this.#mode = 'discard';
      this.#deps.logger.error(
        { provider: vendor.provider, [F.status]: statusCode },
        'the upstream answered with a redirect',
      );
      this.#finish(this.#refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'upstream_redirect'));
      return;
    }
    if (statusCode >= 400) {
      // A vendor error passes through with its status and format once it is read whole; nothing was billed.
      this.#mode = 'error';
      this.#headers = headers;
      return;
    }
    const sse = String(headers['content-type'] ?? '')
      .toLowerCase()
      .startsWith('text/event-stream');
    try {
      this.#res.writeHead(
        statusCode,
        agentResponseHeaders(headers, this.#f.verdict.decisionId, { dropLength: sse, key: this.#f.key }),
      );
    } catch {
      this.#finish(this.#refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'invalid_header'));
      controller.abort(new Error('invalid response header'));
      return;
    }
    this.#mode = 'relay';
    if (sse) {
      const tap = vendor.streamTap({
        dropUsageChunk: this.#f.injectedUsageChunk,
        onToolCall: this.#f.onToolCall,
      });
      this.#splitter = new SseSplitter();
      this.#tap = tap;
      // A stream's headers go out now, so the agent sees the call start before the first event, unless events
      // came in the same read: then they go out together.
      this.#queueWrite();
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#mode === 'error') {
      if (this.#done) return;
      this.#copied += chunk.length;
      if (this.#copied > MAX_ERROR_BYTES) {
        this.#finish(this.#refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'error_body_unreadable'));
        controller.abort(new Error('vendor error body too large'));
        return;
      }
      this.#copy.push(chunk);
      return;
    }
    if (this.#mode !== 'relay' || this.#done) return;
    let out = chunk;
    if (this.#splitter) out = this.#splitter.push(chunk, this.#keep);
    else if (this.#copied <= MAX_JSON_RESPONSE_BYTES) {
      this.#copy.push(chunk);
      this.#copied += chunk.length;
      // Too big to account exactly: stop holding it (the reservation is charged instead).
      if (this.#copied > MAX_JSON_RESPONSE_BYTES) this.#copy.length = 0;
    }
    if (out.length === 0) return;
    this.#pending.push(out);
    this.#queueWrite();
  }

  onResponseEnd(): void {
    if (this.#done) return;
    if (this.#mode === 'error') this.#finish(this.#passError());
    else if (this.#mode === 'relay') this.#finish(this.#end());
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    if (this.#done) return;
    if (this.#mode === 'error')
      this.#finish(this.#refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'error_body_unreadable'));
    else this.#finish(this.#failed(err));
  }

  #end(): ForwardOutcome {
    const res = this.#res;
    if (res.destroyed) return { ...GONE, status: this.#status, billed: true, ...this.#usage() };
    const splitter = this.#splitter;
    let usage: TokenUsage | undefined;
    if (splitter) {
      const rest = splitter.end(this.#keep);
      if (rest.length > 0) this.#pending.push(rest);
      res.end(this.#take());
      usage = this.#tap?.usage();
    } else {
      res.end(this.#take());
      if (this.#copied <= MAX_JSON_RESPONSE_BYTES) {
        const json = parseJson(Buffer.concat(this.#copy, this.#copied).toString('utf8'));
        this.#copy = [];
        usage = this.#vendor.usageFromJson(json);
        for (const name of this.#vendor.toolCallsFromJson(json)) this.#f.onToolCall(name);
      }
    }
    return { kind: 'forwarded', status: this.#status, billed: true, ...(usage ? { usage } : {}) };
  }

  #failed(err: Error): ForwardOutcome {
    const f = this.#f;
    const res = this.#res;
    const started = this.#mode === 'relay';
    if (f.signal.aborted || (started && res.destroyed)) {
      // Cutting the call does not stop the vendor working on (and billing) a prompt it already received.
      return started
        ? { ...GONE, status: this.#status, billed: true, ...this.#usage() }
        : { ...GONE, billed: this.#sent };
    }
    const failure = classifyUpstreamError(err);
    this.#deps.metrics.upstreamErrors.inc({ kind: failure.kind });
    // No answer began, but once the whole request was sent (a slow non-streamed answer past the headers timeout, a
    // reset while the vendor works) the vendor may go on to bill it, as when the agent leaves at that point.
    if (!started) return { ...this.#refuse(failure.code, failure.detail), billed: this.#sent };
    if (this.#splitter) {
      // Headers are out, but a stream can still end with an error event the SDK turns into an exception.
      const event = this.#vendor.errorEvent(vendorError(failure.code, f.verdict.decisionId));
      this.#pending.push(Buffer.from(event));
      res.end(this.#take());
    } else {
      res.destroy();
    }
    return {
      kind: 'upstream_error',
      status: this.#status,
      billed: true,
      errorCode: failure.code,
      upstreamError: failure.detail,
      ...this.#usage(),
    };
  }

  #queueWrite(): void {
    if (this.#queued) return;
    this.#queued = true;
    queueMicrotask(this.#write);
  }

  readonly #write = (): void => {
    this.#queued = false;
    if (this.#done) return;
    const res = this.#res;
    try {
      const data = this.#take();
      if (data === undefined) {
        if (!res.headersSent) res.flushHeaders();
        return;
      }
      if (!res.write(data) && !res.destroyed) {
        // The agent reads slower than the vendor writes: stop reading the upstream until it catches up.
        const controller = this.#controller;
        controller?.pause();
        res.once('drain', () => controller?.resume());
      }
    } catch {
      // Outside undici's callbacks nothing would catch this: the agent's connection goes, which ends the call.
      res.destroy();
    }
  };

  /** Everything pending as one buffer (undefined when nothing is). */
  #take(): Buffer | undefined {
    const p = this.#pending;
    if (p.length === 0) return undefined;
    this.#pending = [];
    return p.length === 1 ? p[0] : Buffer.concat(p);
  }

  #usage(): { usage?: TokenUsage } {
    const usage = this.#tap?.usage();
    return usage ? { usage } : {};
  }

  /**
   * The vendor's error body, byte for byte, with any occurrence of the key replaced. An encoded (compressed) body
   * cannot be searched for the key, so it is refused rather than passed through.
   */
  #passError(): ForwardOutcome {
    const status = this.#status;
    const encoding = String(this.#headers['content-encoding'] ?? '')
      .trim()
      .toLowerCase();
    if (encoding !== '' && encoding !== 'identity')
      return this.#refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'error_body_encoded');
    const scrubbed = replaceBytes(
      Buffer.concat(this.#copy, this.#copied),
      Buffer.from(this.#f.key),
      REDACTED_BYTES,
    );
    const out = agentResponseHeaders(this.#headers, this.#f.verdict.decisionId, {
      dropLength: true,
      key: this.#f.key,
    });
    out['content-length'] = String(scrubbed.length);
    try {
      this.#res.writeHead(status, out);
    } catch {
      return this.#refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'invalid_header');
    }
    this.#res.end(scrubbed);
    return { kind: 'upstream_error', status, billed: false, upstreamError: `status_${status}` };
  }

  /** Answers the agent with a sidecar error; nothing was relayed, so nothing was billed (unless the caller says so). */
  #refuse(code: ErrorCode, upstreamError: string, retry?: boolean): ForwardOutcome {
    const res = this.#res;
    const decisionId = this.#f.verdict.decisionId;
    sendVendorError(res, this.#vendor, code, decisionId, retry === undefined ? {} : { retry });
    return { kind: 'upstream_error', status: res.statusCode, billed: false, errorCode: code, upstreamError };
  }

  #finish(outcome: ForwardOutcome): void {
    if (this.#done) return;
    this.#done = true;
    this.#pending = [];
    this.#f.signal.removeEventListener('abort', this.abort);
    this.#resolve(outcome);
  }
}
