// Sends one admitted call upstream and relays the answer to the agent as it arrives, reading usage on the way.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { Pool } from 'undici';
import type { ErrorCode } from '../errors.ts';
import { classifyUpstreamError } from '../proxy/upstream-errors.ts';
import type { Verdict } from '../server/enforcer-types.ts';
import { F } from '../server/log-fields.ts';
import type { Metrics } from '../server/metrics.ts';
import { agentResponseHeaders, upstreamRequestHeaders } from './headers.ts';
import { sendVendorError, vendorError } from './respond.ts';
import { SseSplitter } from './sse.ts';
import type { TokenUsage } from './usage.ts';
import { parseJson, type VendorAdapter } from './vendor.ts';

// A non-streamed answer is read whole to find its usage; past this it is still relayed, just not accounted exactly.
const MAX_JSON_RESPONSE_BYTES = 64 * 1024 * 1024;
// Vendor error bodies are buffered so the key can be scrubbed from them.
const MAX_ERROR_BYTES = 1024 * 1024;
const REDACTED = '[REDACTED]';

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
  readonly signal: AbortSignal;
  readonly onToolCall: (name: string) => void;
}

export interface ForwardOutcome {
  readonly kind: 'forwarded' | 'upstream_error' | 'client_gone';
  readonly status?: number;
  /** Complete usage, when the response reported it. */
  readonly usage?: TokenUsage;
  /** The vendor may have billed the call (a 2xx began), so unknown usage is charged at the reservation. */
  readonly billed: boolean;
  readonly errorCode?: ErrorCode;
  readonly upstreamError?: string;
  readonly reason?: string;
}

/**
 * Sends an admitted call upstream and relays the answer as it arrives, reading usage and tool calls on the way.
 * Never throws: every failure is answered to the agent in the vendor's format and described in the outcome.
 */
export async function forwardCall(
  deps: ForwardDeps,
  up: Upstream,
  req: IncomingMessage,
  res: ServerResponse,
  f: ForwardRequest,
): Promise<ForwardOutcome> {
  const { vendor } = up;
  const refuse = (code: ErrorCode, upstreamError: string, retry?: boolean): ForwardOutcome => {
    sendVendorError(res, vendor, code, f.verdict.decisionId, retry === undefined ? {} : { retry });
    return {
      kind: 'upstream_error',
      status: res.statusCode,
      billed: false,
      errorCode: code,
      upstreamError,
    };
  };
  let response: Awaited<ReturnType<Pool['request']>>;
  try {
    response = await up.pool.request({
      path: f.path,
      method: 'POST',
      headers: upstreamRequestHeaders(req.rawHeaders, req.headers.connection, vendor.keyHeader(f.key)),
      body: f.payload,
      signal: f.signal,
    });
  } catch (err) {
    if (f.signal.aborted) return { kind: 'client_gone', billed: false, reason: 'client_gone' };
    const failure = classifyUpstreamError(err);
    deps.metrics.upstreamErrors.inc({ kind: failure.kind });
    return refuse(failure.code, failure.detail);
  }
  const { statusCode, headers, body } = response;
  body.on('error', () => {});

  if (statusCode === 401) {
    // The vendor refused the sidecar's own key: the operator's problem, and its message may quote part of the key.
    body.resume();
    deps.logger.error(
      { provider: vendor.provider, [F.status]: statusCode },
      'the upstream refused the configured API key',
    );
    return refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'upstream_rejected_key', false);
  }
  if (statusCode < 200 || statusCode >= 300) {
    // A vendor error passes through with its status and format; nothing was billed.
    const text = await readLimited(body, MAX_ERROR_BYTES);
    if (text === undefined) return refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'error_body_unreadable');
    const scrubbed = Buffer.from(text.toString('utf8').replaceAll(f.key, REDACTED));
    const out = agentResponseHeaders(headers, f.verdict.decisionId, { dropLength: true });
    out['content-length'] = String(scrubbed.length);
    res.writeHead(statusCode, out);
    res.end(scrubbed);
    return {
      kind: 'upstream_error',
      status: statusCode,
      billed: false,
      upstreamError: `status_${statusCode}`,
    };
  }

  const contentType = String(headers['content-type'] ?? '');
  const sse = contentType.toLowerCase().startsWith('text/event-stream');
  try {
    res.writeHead(statusCode, agentResponseHeaders(headers, f.verdict.decisionId, { dropLength: sse }));
  } catch {
    body.destroy();
    return refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'invalid_header');
  }
  // A stream's headers go out at once, so the agent sees the call start before the first event.
  if (sse) res.flushHeaders();

  let usage: TokenUsage | undefined;
  const splitter = sse ? new SseSplitter() : undefined;
  const tap = sse
    ? vendor.streamTap({ dropUsageChunk: f.injectedUsageChunk, onToolCall: f.onToolCall })
    : undefined;
  const copy: Buffer[] = [];
  let copied = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      let out = chunk;
      if (splitter && tap) out = splitter.push(chunk, (ev) => tap.onEvent(ev));
      else if (copied <= MAX_JSON_RESPONSE_BYTES) {
        copy.push(chunk);
        copied += chunk.length;
        // Too big to account exactly: stop holding it (the reservation is charged instead).
        if (copied > MAX_JSON_RESPONSE_BYTES) copy.length = 0;
      }
      if (out.length > 0 && !res.write(out)) await drained(res);
      if (res.destroyed) break;
    }
  } catch (err) {
    if (f.signal.aborted || res.destroyed) {
      return {
        kind: 'client_gone',
        status: statusCode,
        billed: true,
        reason: 'client_gone',
        ...usageOf(tap),
      };
    }
    const failure = classifyUpstreamError(err);
    deps.metrics.upstreamErrors.inc({ kind: failure.kind });
    if (sse) {
      // Headers are out, but a stream can still end with an error event the SDK turns into an exception.
      res.end(vendor.errorEvent(vendorError(failure.code, f.verdict.decisionId)));
    } else {
      res.destroy();
    }
    return {
      kind: 'upstream_error',
      status: statusCode,
      billed: true,
      errorCode: failure.code,
      upstreamError: failure.detail,
      ...usageOf(tap),
    };
  }
  if (res.destroyed)
    return {
      kind: 'client_gone',
      status: statusCode,
      billed: true,
      reason: 'client_gone',
      ...usageOf(tap),
    };
  if (splitter && tap) {
    const rest = splitter.end((ev) => tap.onEvent(ev));
    res.end(rest.length > 0 ? rest : undefined);
    usage = tap.usage();
  } else {
    res.end();
    if (copied <= MAX_JSON_RESPONSE_BYTES) {
      const json = parseJson(Buffer.concat(copy, copied).toString('utf8'));
      usage = vendor.usageFromJson(json);
      for (const name of vendor.toolCallsFromJson(json)) f.onToolCall(name);
    }
  }
  return { kind: 'forwarded', status: statusCode, billed: true, ...(usage ? { usage } : {}) };
}

function usageOf(tap: { usage(): TokenUsage | undefined } | undefined): { usage?: TokenUsage } {
  const usage = tap?.usage();
  return usage ? { usage } : {};
}

/** Resolves when the response can take more, or is gone. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.once('drain', done);
    res.once('close', done);
  });
}

/** The whole body, or undefined when it is longer than `limit` or fails. */
async function readLimited(
  body: AsyncIterable<Buffer> & { destroy(): void },
  limit: number,
): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      size += chunk.length;
      if (size > limit) {
        body.destroy();
        return undefined;
      }
      chunks.push(chunk);
    }
  } catch {
    return undefined;
  }
  return Buffer.concat(chunks, size);
}
