// The agent-facing listener: one port serving the action API (/v1/evaluate), health, gateways, and the forward proxy.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { readBody } from './body.ts';
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
    const parsed = parseStrictJson(body.body.toString('utf8'));
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
  });
  server.on('request', onRequest);
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
    if (err.code === 'ECONNRESET' || !socket.writable) return socket.destroy();
    writeSocketError(socket, code);
  });
  return server;
}
