// The agent-facing listener: one port serving the action API (/v1/evaluate), health, gateways, and the forward proxy.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ErrorCode } from '../errors.ts';
import { isJsonContentType, readBody } from './body.ts';
import type { Enforcer } from './enforcer-types.ts';
import { DECISION_HEADER, sendError, sendJson, writeSocketError } from './http-errors.ts';
import { canonicalLineLogger, DECISION_MSG, F } from './log-fields.ts';
import { parseStrictJson } from './strict-json.ts';

export interface ProxyHandlers {
  handleRequest(req: IncomingMessage, res: ServerResponse): void;
  handleConnect(req: IncomingMessage, socket: Duplex, head: Buffer): void;
}

/** A gateway mounted under a path prefix (e.g. /mcp, /anthropic, /openai). */
export interface MountedRoute {
  readonly prefix: string;
  handle(req: IncomingMessage, res: ServerResponse): void;
}

export interface AgentListenerDeps {
  readonly enforcer: Enforcer;
  readonly proxy: ProxyHandlers;
  readonly logger: Logger;
  readonly ready: () => boolean;
  readonly routes?: readonly MountedRoute[];
  readonly maxEvaluateBytes?: number;
}

export interface ListenerLimits {
  readonly maxHeaderSize: number;
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly keepAliveTimeoutMs: number;
}

export const DEFAULT_LISTENER_LIMITS: ListenerLimits = {
  maxHeaderSize: 16 * 1024,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  keepAliveTimeoutMs: 5_000,
};

export const checkingInterval = (headersTimeoutMs: number) =>
  Math.min(1000, Math.max(100, Math.floor(headersTimeoutMs / 4)));

export function createAgentServer(
  deps: AgentListenerDeps,
  limits: ListenerLimits = DEFAULT_LISTENER_LIMITS,
): Server {
  const maxEvaluate = deps.maxEvaluateBytes ?? 64 * 1024;

  const lineLogger = canonicalLineLogger(deps.logger);
  const evaluate = async (req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now();
    const body = await readBody(req, maxEvaluate);
    if (!body.ok) return sendError(res, body.code);
    // Unparseable input is still a decision: DENY (malformed_action), audited like any other.
    const parsed = parseStrictJson(body.body.toString('utf8'), { exactNumbers: true });
    const ac = new AbortController();
    res.once('close', () => ac.abort());
    const verdict = await deps.enforcer.decide({
      kind: 'evaluate',
      action: parsed.ok ? parsed.value : { malformed: parsed.why },
      signal: ac.signal,
    });
    lineLogger.info(
      {
        [F.decisionId]: verdict.decisionId,
        [F.kind]: 'evaluate',
        [F.effect]: verdict.effect,
        [F.rule]: verdict.decision.rule,
        [F.reason]: verdict.decision.reason,
        [F.durationMs]: Math.round((performance.now() - started) * 1000) / 1000,
      },
      DECISION_MSG,
    );
    if (res.destroyed) return;
    sendJson(
      res,
      200,
      {
        decision_id: verdict.decisionId,
        effect: verdict.effect,
        ...(verdict.errorCode ? { error: { code: verdict.errorCode } } : {}),
      },
      { [DECISION_HEADER]: verdict.decisionId },
    );
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    // node:http's own Host check (requireHostHeader) answers with an empty non-JSON 400, so it is off and done
    // here instead: an HTTP/1.1 request without Host (origin- or absolute-form) gets the uniform 400, and the
    // connection closes as node would have closed it. HTTP/1.0 needs no Host; CONNECT never reaches this handler.
    if (req.httpVersion === '1.1' && req.headers.host === undefined) {
      req.resume();
      res.setHeader('connection', 'close');
      return sendError(res, 'SIDECAR_ERR_REQUEST_MALFORMED');
    }
    const target = req.url ?? '';
    if (/^https?:\/\//i.test(target)) return deps.proxy.handleRequest(req, res);
    const path = target.split('?')[0] ?? '';
    for (const route of deps.routes ?? []) {
      if (path === route.prefix || path.startsWith(`${route.prefix}/`)) return route.handle(req, res);
    }
    if (path === '/healthz') return sendJson(res, 200, { status: 'ok' });
    if (path === '/readyz')
      return deps.ready()
        ? sendJson(res, 200, { status: 'ready' })
        : sendJson(res, 503, { status: 'not_ready' });
    if (path === '/v1/evaluate') {
      if (req.method !== 'POST') return sendError(res, 'SIDECAR_ERR_METHOD_NOT_ALLOWED');
      // A page the agent renders can post a form here (text/plain, an Origin header): refused before any decision,
      // so it spends no rate-limit slot, parks no approval and writes no audit entry. Agents send JSON, no Origin.
      if (req.headers.origin !== undefined) {
        req.resume();
        return sendError(res, 'SIDECAR_ERR_POLICY_DENIED');
      }
      if (!isJsonContentType(req.headers['content-type'])) {
        req.resume();
        return sendError(res, 'SIDECAR_ERR_UNSUPPORTED_MEDIA_TYPE');
      }
      evaluate(req, res).catch((err: unknown) => {
        deps.logger.error({ err: (err as Error).message }, 'evaluate failed');
        sendError(res, 'SIDECAR_ERR_INTERNAL');
      });
      return;
    }
    req.resume();
    sendError(res, 'SIDECAR_ERR_NOT_FOUND');
  };

  const server = createServer({
    maxHeaderSize: limits.maxHeaderSize,
    headersTimeout: limits.headersTimeoutMs,
    requestTimeout: limits.requestTimeoutMs,
    keepAliveTimeout: limits.keepAliveTimeoutMs,
    // Node checks header/request timeouts only this often (30 s by default), so a slowloris client would
    // outlive a shorter limit: check at a quarter of the headers timeout, within 100 ms..1 s.
    connectionsCheckingInterval: checkingInterval(limits.headersTimeoutMs),
    requireHostHeader: false,
  });
  server.on('request', onRequest);
  // Any Expect other than 100-continue: node would answer an empty 417 (not in the registry); answer the uniform
  // 400 instead, for every route (evaluate, gateways, proxy). The body, if any, is drained so keep-alive holds.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    sendError(res, 'SIDECAR_ERR_REQUEST_MALFORMED');
  });
  server.on('connect', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
    deps.proxy.handleConnect(req, socket, head),
  );
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const code =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? 'SIDECAR_ERR_HEADERS_TOO_LARGE'
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? 'SIDECAR_ERR_REQUEST_TIMEOUT'
          : 'SIDECAR_ERR_REQUEST_MALFORMED';
    if (err.code === 'ECONNRESET') return socket.destroy();
    // The parser reports the error again each time more bytes arrive; one answer per connection, and a repeat
    // must not destroy the socket under an answer still being written.
    if (clientErrorPending.has(socket)) return;
    if (!socket.writable) return socket.destroy();
    clientErrorPending.add(socket);
    answerAfterInFlight(socket, code);
  });
  return server;
}

const clientErrorPending = new WeakSet<Duplex>();

/**
 * A request pipelined behind one still being answered (an evaluation awaiting its audit write, a proxied
 * request) must not have its error overtake that answer: wait for every complete request's response already on
 * the socket to finish, then write the uniform error and close. If the in-flight response dies instead, just
 * close. If the in-flight response belongs to a request whose body is still arriving, the error is about that
 * request (a truncated or broken body): answer now, as node does, unless its response has begun (then close).
 */
function answerAfterInFlight(socket: Duplex, code: ErrorCode): void {
  const inFlight = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
  if (inFlight && !inFlight.writableFinished) {
    if (!inFlight.req.complete) {
      if (inFlight.headersSent) return void socket.destroy();
    } else {
      const onFinish = () => {
        inFlight.off('close', onClose);
        // node hands the socket to the next queued response (if any) in its own 'finish' listener, which ran first.
        answerAfterInFlight(socket, code);
      };
      const onClose = () => {
        inFlight.off('finish', onFinish);
        socket.destroy();
      };
      inFlight.once('finish', onFinish);
      inFlight.once('close', onClose);
      return;
    }
  }
  if (!socket.writable) return void socket.destroy();
  writeSocketError(socket, code);
}
