// The admin HTTP API (health, Prometheus metrics, approvals) and the TCP or unix-socket listener that serves it.
import { once } from 'node:events';
import { chmod, lstat, unlink } from 'node:fs/promises';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ApprovalQueue, PendingApproval, ResolveResult } from '../approvals/approval-queue.ts';
import type { ErrorCode } from '../errors.ts';
import { SidecarError } from '../errors.ts';
import { checkBearer } from './admin-auth.ts';
import { sendError, sendJson, writeSocketError } from './http-errors.ts';
import { F } from './log-fields.ts';
import type { Metrics } from './metrics.ts';

export const MAX_ADMIN_BODY_BYTES = 16 * 1024;

/** Log field names of the admin component (beyond the shared ones in log-fields.ts). */
export const ADMIN_F = { approvalId: 'approval_id', approver: 'approver', outcome: 'outcome' } as const;

export interface ApprovalDecisionEvent {
  readonly id: string;
  readonly decisionId: string;
  readonly approver: string;
  readonly outcome: 'approved' | 'denied';
}

export interface AdminDeps {
  readonly token: string;
  readonly approvals: ApprovalQueue;
  readonly metrics: Metrics;
  /** The admin component's logger: the caller binds `component` (binding it again would duplicate the key). */
  readonly logger: Logger;
  /** False while starting or draining: /healthz answers 503. */
  readonly ready: () => boolean;
  /** Called after an approver's decision took effect (the held request has already been resolved). */
  readonly onApprovalDecision?: (e: ApprovalDecisionEvent) => void;
}

export type AdminHandler = (req: IncomingMessage, res: ServerResponse) => void;

/** The approval as the admin API shows it (snake_case, like every other wire format of the sidecar). */
export interface PendingApprovalJson {
  readonly id: string;
  readonly decision_id: string;
  readonly agent: string;
  readonly rule: string;
  readonly action: unknown;
  readonly action_hash: string;
  readonly created_at: string;
  readonly expires_at: string;
}

export function pendingApprovalJson(p: PendingApproval): PendingApprovalJson {
  return {
    id: p.id,
    decision_id: p.decisionId,
    agent: p.agent,
    rule: p.rule,
    action: p.action,
    action_hash: p.actionHash,
    created_at: p.createdAt,
    expires_at: p.expiresAt,
  };
}

const APPROVAL_ROUTE = /^\/v1\/approvals\/([A-Za-z0-9_-]{1,128})\/(approve|deny)$/;
const ACTION_HASH = /^[0-9a-f]{64}$/;

type BodyResult =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly code?: ErrorCode };

export function createAdminHandler(deps: AdminDeps): AdminHandler {
  const log = deps.logger;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader('cache-control', 'no-store');
    const target = req.url ?? '';
    // Not origin-form (absolute-form, `*`): no route, but the token is still checked first below.
    const path = target.startsWith('/') ? (target.split('?', 1)[0] ?? '') : '';

    if (path === '/healthz') {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      // A probe answer, not an error: there is no registry code for "not ready yet".
      return deps.ready()
        ? sendJson(res, 200, { status: 'ok' })
        : sendJson(res, 503, { status: 'not_ready' });
    }

    // Every other path, known or not, needs the token: an unauthenticated caller learns nothing about routes.
    if (!checkBearer(req.headers.authorization, deps.token)) {
      log.warn(
        { [F.method]: req.method, [F.errorCode]: 'SIDECAR_ERR_ADMIN_UNAUTHORIZED' },
        'admin request refused',
      );
      res.setHeader('www-authenticate', 'Bearer');
      return sendError(res, 'SIDECAR_ERR_ADMIN_UNAUTHORIZED');
    }
    if (path === '') return sendError(res, 'SIDECAR_ERR_NOT_FOUND');

    if (path === '/metrics') {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      // Read at scrape time as well, so the gauge is right even if nobody wired the queue's onChange.
      deps.metrics.approvalsPending.set(deps.approvals.size);
      const text = await deps.metrics.registry.metrics();
      res.writeHead(200, {
        'content-type': deps.metrics.registry.contentType,
        'content-length': Buffer.byteLength(text),
      });
      res.end(text);
      return;
    }

    if (path === '/v1/approvals') {
      if (req.method !== 'GET') return methodNotAllowed(res, 'GET');
      return sendJson(res, 200, { approvals: deps.approvals.list().map(pendingApprovalJson) });
    }

    const route = APPROVAL_ROUTE.exec(path);
    if (route) {
      if (req.method !== 'POST') return methodNotAllowed(res, 'POST');
      const id = route[1]!;
      const verb = route[2] === 'approve' ? 'approve' : 'deny';
      const body = await readJsonBody(req, res);
      if (!body.ok) {
        if (body.code) sendError(res, body.code);
        return;
      }
      return resolveApproval(res, id, verb, body.value);
    }

    if (path.startsWith('/v1/approvals/')) return sendError(res, 'SIDECAR_ERR_APPROVAL_NOT_FOUND');
    return sendError(res, 'SIDECAR_ERR_NOT_FOUND');
  }

  function resolveApproval(res: ServerResponse, id: string, verb: 'approve' | 'deny', value: unknown): void {
    const body = parseDecisionBody(verb, value);
    if (body === undefined) {
      sendError(res, 'SIDECAR_ERR_REQUEST_MALFORMED');
      return;
    }
    const { approver, actionHash } = body;
    const result: ResolveResult =
      verb === 'approve'
        ? deps.approvals.approve(id, approver, actionHash)
        : deps.approvals.deny(id, approver);
    if (!result.ok) {
      log.warn({ [ADMIN_F.approvalId]: id, [F.reason]: result.reason }, `approval ${verb} refused`);
      // A changed action means the approver's request does not fit what is pending: no dedicated code, so 400.
      sendError(
        res,
        result.reason === 'not_found' ? 'SIDECAR_ERR_APPROVAL_NOT_FOUND' : 'SIDECAR_ERR_REQUEST_MALFORMED',
      );
      return;
    }

    const outcome = verb === 'approve' ? 'approved' : 'denied';
    log.info(
      {
        [ADMIN_F.approvalId]: id,
        [F.decisionId]: result.decisionId,
        [ADMIN_F.approver]: approver,
        [ADMIN_F.outcome]: outcome,
      },
      'approval decided',
    );
    try {
      deps.onApprovalDecision?.({ id, decisionId: result.decisionId, approver, outcome });
    } catch (err) {
      log.error({ err, [ADMIN_F.approvalId]: id }, 'onApprovalDecision failed');
    }
    sendJson(res, 200, { id, decision_id: result.decisionId, outcome, approver });
  }

  return (req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err }, 'admin request failed');
      sendError(res, 'SIDECAR_ERR_INTERNAL');
    });
  };
}

function methodNotAllowed(res: ServerResponse, allow: string): void {
  res.setHeader('allow', allow);
  sendError(res, 'SIDECAR_ERR_METHOD_NOT_ALLOWED');
}

/** `{approver, action_hash?}` for approve, `{approver}` for deny; unknown members are refused. */
function parseDecisionBody(
  verb: 'approve' | 'deny',
  value: unknown,
): { approver: string; actionHash?: string } | undefined {
  const allowed = verb === 'approve' ? ['approver', 'action_hash'] : ['approver'];
  if (!isPlainObject(value) || Object.keys(value).some((k) => !allowed.includes(k))) return undefined;
  const { approver, action_hash: actionHash } = value;
  if (typeof approver !== 'string') return undefined;
  if (actionHash === undefined) return { approver };
  if (typeof actionHash !== 'string' || !ACTION_HASH.test(actionHash)) return undefined;
  return { approver, actionHash };
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads a JSON body of at most MAX_ADMIN_BODY_BYTES. On failure `code` says what to answer (none: client gone). */
async function readJsonBody(req: IncomingMessage, res: ServerResponse): Promise<BodyResult> {
  const type = (req.headers['content-type'] ?? '').split(';', 1)[0]!.trim().toLowerCase();
  if (type !== 'application/json') return { ok: false, code: 'SIDECAR_ERR_UNSUPPORTED_MEDIA_TYPE' };
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > MAX_ADMIN_BODY_BYTES) return tooLarge(res);

  const raw = await new Promise<Buffer | 'too_large' | 'aborted'>((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (r: Buffer | 'too_large' | 'aborted'): void => {
      if (done) return;
      done = true;
      req.off('data', onData);
      resolve(r);
    };
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size > MAX_ADMIN_BODY_BYTES) {
        req.pause();
        finish('too_large');
      } else chunks.push(chunk);
    };
    req.on('data', onData);
    req.once('end', () => finish(Buffer.concat(chunks)));
    req.once('error', () => finish('aborted'));
    req.once('close', () => finish('aborted'));
  });
  if (raw === 'aborted') return { ok: false };
  if (raw === 'too_large') return tooLarge(res);
  try {
    return { ok: true, value: JSON.parse(raw.toString('utf8')) as unknown };
  } catch {
    return { ok: false, code: 'SIDECAR_ERR_REQUEST_MALFORMED' };
  }
}

function tooLarge(res: ServerResponse): BodyResult {
  // The rest of the body is never read: close the connection once the answer is out.
  res.setHeader('connection', 'close');
  return { ok: false, code: 'SIDECAR_ERR_REQUEST_TOO_LARGE' };
}

export type AdminListenOptions =
  | { readonly host: string; readonly port: number }
  | { readonly socketPath: string };

export type AdminAddress =
  | { readonly host: string; readonly port: number; readonly url: string }
  | { readonly socketPath: string };

export interface AdminListener {
  readonly address: AdminAddress;
  close(): Promise<void>;
}

/** Opens the admin listener. A unix socket is created mode 0600 (a stale socket nobody listens on is replaced). */
export async function startAdminListener(
  opts: AdminListenOptions,
  handler: AdminHandler,
): Promise<AdminListener> {
  const server = createServer(
    // connectionsCheckingInterval: Node's 30 s default would let a slowloris client outlive the 10 s limit.
    {
      maxHeaderSize: 16 * 1024,
      headersTimeout: 10_000,
      requestTimeout: 30_000,
      connectionsCheckingInterval: 1000,
    },
    handler,
  );
  server.on('clientError', onClientError);

  let address: AdminAddress;
  if ('socketPath' in opts) {
    await listenUnix(server, opts.socketPath);
    try {
      await chmod(opts.socketPath, 0o600);
    } catch (err) {
      await closeServer(server);
      throw listenFailed(opts.socketPath, err);
    }
    address = { socketPath: opts.socketPath };
  } else {
    await listen(server, { host: opts.host, port: opts.port }, `${opts.host}:${opts.port}`);
    const info = server.address() as AddressInfo;
    const host = info.family === 'IPv6' ? `[${info.address}]` : info.address;
    address = { host: info.address, port: info.port, url: `http://${host}:${info.port}` };
  }
  return { address, close: () => closeServer(server) };
}

function onClientError(err: Error & { code?: string }, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const code: ErrorCode =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? 'SIDECAR_ERR_HEADERS_TOO_LARGE'
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? 'SIDECAR_ERR_REQUEST_TIMEOUT'
        : 'SIDECAR_ERR_REQUEST_MALFORMED';
  writeSocketError(socket, code);
}

function listenFailed(where: string, err: unknown): SidecarError {
  const why = err instanceof Error ? err.message : String(err);
  return new SidecarError('SIDECAR_ERR_LISTEN_FAILED', `admin listener ${where}: ${why}`, { cause: err });
}

async function listen(
  server: Server,
  options: { host: string; port: number } | { path: string },
  where: string,
) {
  try {
    server.listen(options);
    await once(server, 'listening');
  } catch (err) {
    throw listenFailed(where, err);
  }
}

async function listenUnix(server: Server, path: string): Promise<void> {
  try {
    await listen(server, { path }, path);
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    if (cause?.code !== 'EADDRINUSE' || !(await isStaleSocket(path))) throw err;
    await unlink(path);
    await listen(server, { path }, path);
  }
}

/** A socket file nobody accepts on (left by a crashed sidecar); never true for a regular file. */
async function isStaleSocket(path: string): Promise<boolean> {
  try {
    if (!(await lstat(path)).isSocket()) return false;
  } catch {
    return false;
  }
  return new Promise((resolve) => {
    const probe = connect({ path });
    probe.once('connect', () => {
      probe.destroy();
      resolve(false);
    });
    probe.once('error', (err: Error & { code?: string }) => resolve(err.code === 'ECONNREFUSED'));
  });
}

function closeServer(server: Server): Promise<void> {
  if (!server.listening) return Promise.resolve();
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
