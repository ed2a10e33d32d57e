// One absolute-form request through the proxy: the egress decision, the upstream exchange over undici's dispatch API
// (this object is the handler: response chunks go straight to the agent's response, no body stream in between), and
// the canonical line it ends with.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { ErrorCode } from '../errors.ts';
import type { Verdict } from '../server/enforcer-types.ts';
import { sendError } from '../server/http-errors.ts';
import type { Metrics } from '../server/metrics.ts';
import type { EgressDeps, NetworkAction } from './egress-decision.ts';
import { decideEgress, logProxyLine } from './egress-decision.ts';
import { agentResponseHeaders, type ResponseHeaders, upstreamRequestHeaders } from './forward-headers.ts';
import { BodyTooLargeError, ByteLimit, type ProxyLimits } from './limits.ts';
import { classifyUpstreamError } from './upstream-errors.ts';
import type { UpstreamPools } from './upstream-pools.ts';

export interface ExchangeDeps extends EgressDeps {
  readonly logger: Logger;
  readonly metrics: Metrics;
}

export interface ExchangeContext {
  readonly deps: ExchangeDeps;
  readonly limits: ProxyLimits;
  readonly pools: UpstreamPools;
  /** Writes the canonical line (see canonicalLineLogger). */
  readonly lineLogger: Logger;
  /** Called once per exchange, after its canonical line. */
  readonly settled: (exchange: HttpExchange) => void;
}

const MALFORMED: ErrorCode = 'SIDECAR_ERR_REQUEST_MALFORMED';
const TOO_LARGE: ErrorCode = 'SIDECAR_ERR_REQUEST_TOO_LARGE';

/** Aborts the upstream request when the agent has gone; one instance, so leaving costs no stack trace. */
class AgentGone extends Error {
  override readonly name = 'AgentGone';
}
const AGENT_GONE = new AgentGone('the agent closed its connection');

interface AbsoluteTarget {
  readonly href: string;
  readonly scheme: 'http' | 'https';
  readonly host: string;
  readonly port: number;
  /** `host[:port]` as the agent wrote it in the target (WHATWG-canonical), for the upstream's Host header. */
  readonly authority: string;
  /** Path and query, dot segments resolved: what the policy saw. */
  readonly path: string;
}

const ABSOLUTE = /^https?:\/\//i;

function parseAbsoluteTarget(raw: string | undefined): AbsoluteTarget | null {
  if (raw === undefined || !ABSOLUTE.test(raw)) return null;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return null;
  }
  // RFC 9110 §4.2.4: userinfo is deprecated in http(s) URIs and has no place in a request-target.
  if (url.hostname === '' || url.username !== '' || url.password !== '') return null;
  const scheme = url.protocol === 'https:' ? 'https' : 'http';
  const port = url.port === '' ? (scheme === 'https' ? 443 : 80) : Number(url.port);
  url.hash = '';
  return {
    href: url.href,
    scheme,
    host: url.hostname,
    port,
    authority: url.host,
    path: `${url.pathname}${url.search}`,
  };
}

/** Whether the request carries a body under HTTP/1.1 framing (RFC 9112 §6.3). */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return Number(length) > 0;
  return req.headers['transfer-encoding'] !== undefined;
}

function isBodyTooLarge(err: unknown): boolean {
  for (let cur: unknown = err, depth = 0; cur instanceof Error && depth < 4; depth++) {
    if (cur instanceof BodyTooLargeError) return true;
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}

export class HttpExchange implements Dispatcher.DispatchHandler {
  readonly #ctx: ExchangeContext;
  readonly #req: IncomingMessage;
  readonly #res: ServerResponse;
  readonly #started = performance.now();
  readonly #method: string;
  /** Cancels a decision still waiting (for approval) when the agent leaves. */
  readonly #abort = new AbortController();
  #target: AbsoluteTarget | null = null;
  #verdict: Verdict | undefined;
  #limiter: ByteLimit | undefined;
  #upstream: Dispatcher.DispatchController | undefined;
  #resume: (() => void) | undefined;
  #bytesOut = 0;
  #reason: string | undefined;
  #errorCode: ErrorCode | undefined;
  #upstreamError: string | undefined;
  #forwarded = false;
  #agentGone = false;
  #settled = false;

  constructor(ctx: ExchangeContext, req: IncomingMessage, res: ServerResponse) {
    this.#ctx = ctx;
    this.#req = req;
    this.#res = res;
    this.#method = req.method ?? 'GET';
  }

  /** Decides, then forwards or refuses. Whatever happens, the exchange settles exactly once. */
  start(): void {
    const res = this.#res;
    // writableEnded, not writableFinished: a finished response may still sit in the socket buffer at 'close',
    // and aborting then would only cost a DOMException per request.
    res.once('close', () => {
      if (!res.writableEnded) this.#agentLeft();
    });
    this.#decideAndForward().catch((err: unknown) => {
      this.#ctx.deps.logger.error({ err }, 'proxy request failed');
      this.#refuse('SIDECAR_ERR_INTERNAL');
    });
  }

  /** Shutdown: ends a decision wait and the upstream request, and drops the agent's connection. */
  cut(): void {
    this.#agentLeft();
    this.#res.destroy();
  }

  async #decideAndForward(): Promise<void> {
    const { deps, limits, pools } = this.#ctx;
    const req = this.#req;
    const target = parseAbsoluteTarget(req.url);
    this.#target = target;
    if (!target) {
      const action: NetworkAction = { type: 'network', url: String(req.url ?? ''), method: this.#method };
      this.#verdict = await deps.enforcer.refuse({ kind: 'proxy', action }, 'malformed_action', MALFORMED);
      this.#refuse(this.#verdict.errorCode ?? MALFORMED);
      return;
    }
    if (Number(req.headers['content-length'] ?? 0) > limits.maxBodyBytes) {
      this.#refuse(TOO_LARGE, 'body_too_large');
      return;
    }

    const action: NetworkAction = { type: 'network', url: target.href, method: this.#method };
    const outcome = await decideEgress(deps, action, target.host, target.port, this.#abort.signal);
    this.#verdict = outcome.verdict;
    if (!outcome.ok) {
      if (outcome.upstreamError) {
        deps.metrics.upstreamErrors.inc({ kind: outcome.upstreamError });
        this.#upstreamError = outcome.upstreamError;
      }
      this.#refuse(outcome.errorCode);
      return;
    }
    if (this.#agentGone) {
      this.#reason = 'client_gone';
      this.#settle();
      return;
    }

    const { resolution } = outcome;
    const servername =
      target.scheme === 'https' && !resolution.host.startsWith('[') && isIP(resolution.host) === 0
        ? resolution.host
        : undefined;
    const pool = pools.get({
      scheme: target.scheme,
      address: resolution.pinned,
      family: resolution.pinnedFamily,
      port: target.port,
      ...(servername ? { servername } : {}),
    });
    let body: ByteLimit | null = null;
    if (hasBody(req)) {
      const limiter = new ByteLimit(limits.maxBodyBytes);
      // On overflow stop forwarding but keep reading, so the agent can finish sending and then read the 413.
      limiter.on('error', () => {
        req.unpipe(limiter);
        req.resume();
      });
      req.pipe(limiter);
      this.#limiter = body = limiter;
    }
    this.#forwarded = true;
    pool.dispatch(
      {
        path: target.path,
        method: this.#method,
        headers: upstreamRequestHeaders(req, target.authority),
        body,
        headersTimeout: limits.upstreamHeadersTimeoutMs,
        bodyTimeout: limits.upstreamBodyTimeoutMs,
        ...(servername ? { servername } : {}),
      },
      this,
    );
  }

  // ---- undici's dispatch handler ----

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#upstream = controller;
    // Left while the request waited for a free connection: it never goes out.
    if (this.#agentGone) controller.abort(AGENT_GONE);
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: ResponseHeaders,
  ): void {
    // Interim responses are not relayed: Node already answered the agent's `expect: 100-continue` itself.
    if (statusCode < 200 || this.#settled) return;
    try {
      this.#res.writeHead(statusCode, agentResponseHeaders(headers, this.#verdict!.decisionId));
    } catch (err) {
      // Node refuses header values it would not send itself; the upstream's answer cannot be relayed as is.
      this.#upstreamError = err instanceof Error ? err.name : 'invalid_header';
      this.#ctx.deps.metrics.upstreamErrors.inc({ kind: 'invalid' });
      this.#refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'upstream_error');
      controller.abort(err instanceof Error ? err : new Error(String(err)));
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled) return;
    this.#bytesOut += chunk.length;
    if (!this.#res.write(chunk)) {
      controller.pause();
      this.#resume ??= () => this.#upstream?.resume();
      this.#res.once('drain', this.#resume);
    }
  }

  onResponseEnd(): void {
    if (this.#settled) return;
    // The answer goes out before the bookkeeping.
    this.#res.end();
    this.#settle();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.#settled) return;
    const { metrics } = this.#ctx.deps;
    if (this.#res.headersSent) {
      // Headers are out: the only honest thing left is to cut the agent's connection.
      this.#res.destroy();
      if (this.#agentGone) this.#reason = 'client_gone';
      else {
        const failure = classifyUpstreamError(err);
        metrics.upstreamErrors.inc({ kind: failure.kind });
        this.#upstreamError = failure.detail;
        this.#reason = 'upstream_error';
      }
      this.#settle();
      return;
    }
    if (isBodyTooLarge(err) || this.#limiter?.errored instanceof BodyTooLargeError) {
      this.#refuse(TOO_LARGE, 'body_too_large');
      return;
    }
    if (this.#agentGone) {
      this.#reason = 'client_gone';
      this.#settle();
      return;
    }
    const failure = classifyUpstreamError(err);
    metrics.upstreamErrors.inc({ kind: failure.kind });
    this.#upstreamError = failure.detail;
    this.#refuse(failure.code, 'upstream_error');
  }

  // ---- endings ----

  #agentLeft(): void {
    if (this.#agentGone) return;
    this.#agentGone = true;
    this.#abort.abort();
    this.#upstream?.abort(AGENT_GONE);
  }

  #refuse(code: ErrorCode, why?: string): void {
    if (this.#settled) return;
    this.#errorCode = code;
    if (why) this.#reason = why;
    sendError(this.#res, code, this.#verdict?.decisionId);
    this.#settle();
  }

  #settle(): void {
    if (this.#settled) return;
    this.#settled = true;
    const { deps } = this.#ctx;
    const durationMs = performance.now() - this.#started;
    const bytesIn = this.#limiter?.bytes ?? 0;
    if (this.#forwarded) {
      deps.metrics.proxySeconds.observe({ mode: 'http' }, durationMs / 1000);
      deps.metrics.proxyBytes.inc({ direction: 'up' }, bytesIn);
      deps.metrics.proxyBytes.inc({ direction: 'down' }, this.#bytesOut);
    }
    const res = this.#res;
    const target = this.#target;
    logProxyLine(this.#ctx.lineLogger, deps.enforcer.agent, {
      method: this.#method,
      host: target?.host ?? null,
      port: target?.port ?? 0,
      status: res.headersSent ? res.statusCode : 0,
      bytesIn,
      bytesOut: this.#bytesOut,
      durationMs,
      ...(this.#verdict ? { verdict: this.#verdict } : {}),
      ...(this.#reason ? { reason: this.#reason } : {}),
      ...(this.#errorCode ? { errorCode: this.#errorCode } : {}),
      ...(this.#upstreamError ? { upstreamError: this.#upstreamError } : {}),
    });
    this.#ctx.settled(this);
  }
}
