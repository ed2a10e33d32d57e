// The agent's HTTP forward proxy: absolute-form requests forwarded to the pinned address, CONNECT handed to tunnels.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex, Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Dispatcher } from 'undici';
import type { ErrorCode } from '../errors.ts';
import type { Policy } from '../policy/policy.ts';
import type { Enforcer, Verdict } from '../server/enforcer-types.ts';
import { hopByHop } from '../server/hop-by-hop.ts';
import { DECISION_HEADER, sendError } from '../server/http-errors.ts';
import type { Metrics } from '../server/metrics.ts';
import type { AddressGuard } from './address-guard.ts';
import { createTunnelHandler } from './connect-tunnel.ts';
import type { NetworkAction, ProxyLogRecord } from './egress-decision.ts';
import { decideEgress, logProxyLine } from './egress-decision.ts';
import { BodyTooLargeError, ByteLimit, type ProxyLimits, resolveProxyLimits } from './limits.ts';
import { classifyUpstreamError } from './upstream-errors.ts';
import { UpstreamPools } from './upstream-pools.ts';

export type { ProxyLimits } from './limits.ts';
export { DEFAULT_PROXY_LIMITS } from './limits.ts';

export interface ForwardProxyDeps {
  readonly enforcer: Enforcer;
  /** For the pre-DNS pass only (pure evaluate, no audit). */
  readonly currentPolicy: () => Policy;
  readonly guard: AddressGuard;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly limits?: Partial<ProxyLimits>;
}

export interface ForwardProxy {
  /** An absolute-form (`http://` or `https://`) request-target. */
  handleRequest(req: IncomingMessage, res: ServerResponse): void;
  handleConnect(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  activeTunnels(): number;
  /**
   * Refuses new work, waits up to `graceMs` (default 0: the caller has already waited its grace period) for
   * requests and tunnels in flight, then cuts what is left and closes the upstream connection pools.
   */
  close(graceMs?: number): Promise<void>;
}

const VIA = '1.1 agent-sidecar';
const MALFORMED: ErrorCode = 'SIDECAR_ERR_REQUEST_MALFORMED';

interface AbsoluteTarget {
  readonly url: URL;
  readonly scheme: 'http' | 'https';
  readonly host: string;
  readonly port: number;
}

function parseAbsoluteTarget(raw: string | undefined): AbsoluteTarget | null {
  if (raw === undefined || !/^https?:\/\//i.test(raw)) return null;
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
  return { url, scheme, host: url.hostname, port };
}

function upstreamRequestHeaders(req: IncomingMessage, hostHeader: string): string[] {
  const isHopByHop = hopByHop(req.headers.connection);
  const out: string[] = [];
  const raw = req.rawHeaders;
  let via: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    // Node answered any `expect: 100-continue` already; the upstream gets the body without a second handshake.
    if (isHopByHop(lower) || lower === 'host' || lower === 'expect') continue;
    if (lower === 'via') {
      via = via === undefined ? raw[i + 1]! : `${via}, ${raw[i + 1]!}`;
      continue;
    }
    out.push(name, raw[i + 1]!);
  }
  out.push('host', hostHeader, 'via', via === undefined ? VIA : `${via}, ${VIA}`);
  return out;
}

function agentResponseHeaders(
  headers: IncomingHttpHeaders,
  decisionId: string,
): Record<string, string | string[]> {
  const isHopByHop = hopByHop(headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || isHopByHop(name) || name === DECISION_HEADER) continue;
    out[name] = value;
  }
  const via = out['via'];
  out['via'] = via === undefined ? VIA : `${([] as string[]).concat(via).join(', ')}, ${VIA}`;
  out[DECISION_HEADER] = decisionId;
  return out;
}

/** Whether the request carries a body under HTTP/1.1 framing (RFC 9112 §6.3). */
function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  if (length !== undefined) return Number(length) > 0;
  return req.headers['transfer-encoding'] !== undefined;
}

export function createForwardProxy(deps: ForwardProxyDeps): ForwardProxy {
  const limits = resolveProxyLimits(deps.limits);
  const { enforcer, logger, metrics } = deps;
  const pools = new UpstreamPools(limits);
  const tunnels = createTunnelHandler({ ...deps, limits });
  const inflight = new Map<ServerResponse, AbortController>();
  let closing = false;
  let drained: (() => void) | undefined;

  async function forward(req: IncomingMessage, res: ServerResponse, abort: AbortController): Promise<void> {
    const started = performance.now();
    const method = req.method ?? 'GET';
    const target = parseAbsoluteTarget(req.url);
    let verdict: Verdict | undefined;
    let bytesIn = 0;
    let bytesOut = 0;
    let reason: string | undefined;
    let errorCode: ErrorCode | undefined;
    let upstreamError: string | undefined;
    let forwarded = false;

    const refuse = (code: ErrorCode, why?: string) => {
      errorCode = code;
      if (why) reason = why;
      sendError(res, code, verdict?.decisionId);
    };

    try {
      if (!target) {
        const action: NetworkAction = { type: 'network', url: String(req.url ?? ''), method };
        verdict = await enforcer.refuse({ kind: 'proxy', action }, 'malformed_action', MALFORMED);
        refuse(verdict.errorCode ?? MALFORMED);
        return;
      }
      if (Number(req.headers['content-length'] ?? 0) > limits.maxBodyBytes) {
        refuse('SIDECAR_ERR_REQUEST_TOO_LARGE', 'body_too_large');
        return;
      }

      const action: NetworkAction = { type: 'network', url: target.url.href, method };
      const outcome = await decideEgress(deps, action, target.host, target.port, abort.signal);
      verdict = outcome.verdict;
      if (!outcome.ok) {
        if (outcome.upstreamError) {
          metrics.upstreamErrors.inc({ kind: outcome.upstreamError });
          upstreamError = outcome.upstreamError;
        }
        refuse(outcome.errorCode);
        return;
      }
      if (abort.signal.aborted) {
        reason = 'client_gone';
        return;
      }

      const { resolution } = outcome;
      const named =
        resolution.host.startsWith('[') || isIP(resolution.host) !== 0 ? undefined : resolution.host;
      const pool = pools.get({
        scheme: target.scheme,
        address: resolution.pinned,
        family: resolution.pinnedFamily,
        port: target.port,
        ...(target.scheme === 'https' && named ? { servername: named } : {}),
      });
      let limiter: ByteLimit | undefined;
      if (hasBody(req)) {
        limiter = new ByteLimit(limits.maxBodyBytes);
        const body = limiter;
        // On overflow stop forwarding but keep reading, so the agent can finish sending and then read the 413.
        body.on('error', () => {
          req.unpipe(body);
          req.resume();
        });
        req.pipe(body);
      }
      forwarded = true;

      let response: Dispatcher.ResponseData;
      try {
        response = await pool.request({
          path: `${target.url.pathname}${target.url.search}`,
          method,
          headers: upstreamRequestHeaders(req, target.url.host),
          body: limiter ?? null,
          signal: abort.signal,
          headersTimeout: limits.upstreamHeadersTimeoutMs,
          bodyTimeout: limits.upstreamBodyTimeoutMs,
          ...(target.scheme === 'https' && named ? { servername: named } : {}),
        });
      } catch (err) {
        bytesIn = limiter?.bytes ?? 0;
        if (isBodyTooLarge(err) || limiter?.errored instanceof BodyTooLargeError) {
          refuse('SIDECAR_ERR_REQUEST_TOO_LARGE', 'body_too_large');
          return;
        }
        if (abort.signal.aborted) {
          reason = 'client_gone';
          return;
        }
        const failure = classifyUpstreamError(err);
        metrics.upstreamErrors.inc({ kind: failure.kind });
        upstreamError = failure.detail;
        refuse(failure.code, 'upstream_error');
        return;
      }

      const { statusCode, headers, body } = response;
      try {
        res.writeHead(statusCode, agentResponseHeaders(headers, outcome.verdict.decisionId));
      } catch (err) {
        // Node refuses header values it would not send itself; the upstream's answer cannot be relayed as is.
        body.destroy();
        upstreamError = err instanceof Error ? err.name : 'invalid_header';
        metrics.upstreamErrors.inc({ kind: 'invalid' });
        refuse('SIDECAR_ERR_UPSTREAM_INVALID', 'upstream_error');
        return;
      }
      body.on('data', (chunk: Buffer) => {
        bytesOut += chunk.length;
      });
      const relayed = await relay(body, res);
      if (relayed === AGENT_GONE) reason = 'client_gone';
      else if (relayed !== undefined) {
        // Headers are out: the only honest thing left is to cut the agent's connection (relay already did).
        const failure = classifyUpstreamError(relayed);
        metrics.upstreamErrors.inc({ kind: failure.kind });
        upstreamError = failure.detail;
        reason = 'upstream_error';
      }
      bytesIn = limiter?.bytes ?? 0;
    } finally {
      const durationMs = performance.now() - started;
      if (forwarded) {
        metrics.proxySeconds.observe({ mode: 'http' }, durationMs / 1000);
        metrics.proxyBytes.inc({ direction: 'up' }, bytesIn);
        metrics.proxyBytes.inc({ direction: 'down' }, bytesOut);
      }
      const record: ProxyLogRecord = {
        method,
        host: target?.host ?? String(req.url ?? ''),
        port: target?.port ?? 0,
        status: res.headersSent ? res.statusCode : 0,
        bytesIn,
        bytesOut,
        durationMs,
        ...(verdict ? { verdict } : {}),
        ...(reason ? { reason } : {}),
        ...(errorCode ? { errorCode } : {}),
        ...(upstreamError ? { upstreamError } : {}),
      };
      logProxyLine(logger, enforcer.agent, record);
    }
  }

  return {
    handleRequest(req, res) {
      req.on('error', () => {});
      res.on('error', () => {});
      if (closing) {
        sendError(res, 'SIDECAR_ERR_SHUTTING_DOWN');
        return;
      }
      const abort = new AbortController();
      inflight.set(res, abort);
      // writableEnded, not writableFinished: a finished response may still sit in the socket buffer at 'close',
      // and aborting then would only cost a DOMException per request.
      res.once('close', () => {
        if (!res.writableEnded) abort.abort();
      });
      forward(req, res, abort)
        .catch((err: unknown) => {
          logger.error({ err }, 'proxy request failed');
          sendError(res, 'SIDECAR_ERR_INTERNAL');
        })
        .finally(() => {
          inflight.delete(res);
          if (inflight.size === 0) drained?.();
        });
    },

    handleConnect(req, socket, head) {
      tunnels.handle(req, socket, head);
    },

    activeTunnels: () => tunnels.active(),

    async close(graceMs = 0) {
      closing = true;
      const requests = (async () => {
        if (inflight.size > 0 && graceMs > 0) {
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((resolve) => {
            drained = resolve;
            timer = setTimeout(resolve, graceMs);
          });
          clearTimeout(timer);
        }
        for (const [res, abort] of inflight) {
          abort.abort();
          res.destroy();
        }
      })();
      await Promise.all([requests, tunnels.close(graceMs)]);
      await pools.destroy();
    },
  };
}

const AGENT_GONE = Symbol('agent gone');

/**
 * Streams the upstream body to the agent. Resolves with nothing once the response is finished, with the upstream's
 * error after cutting the agent's connection, or with AGENT_GONE after abandoning the upstream body. (pipeline()
 * would do the same at the price of an AbortController and a DOMException per request.)
 */
function relay(body: Readable, res: ServerResponse): Promise<unknown> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (outcome?: unknown) => {
      if (settled) return;
      settled = true;
      resolve(outcome);
    };
    body.on('error', (err) => {
      res.destroy();
      done(err);
    });
    res.once('finish', () => done());
    res.once('close', () => {
      if (res.writableEnded) return done();
      body.destroy();
      done(AGENT_GONE);
    });
    body.pipe(res);
  });
}

function isBodyTooLarge(err: unknown): boolean {
  for (let cur: unknown = err, depth = 0; cur instanceof Error && depth < 4; depth++) {
    if (cur instanceof BodyTooLargeError) return true;
    cur = (cur as { cause?: unknown }).cause;
  }
  return false;
}
