// Small JSON-over-HTTP helpers the demo's router and agent share: a bounded body reader, a strict object check, replies.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const DEFAULT_MAX_BODY_BYTES = 64 * 1024;

/** A request the handler refuses; `status` and `code` become the JSON error reply. */
export class HttpProblem extends Error {
  readonly status: number;
  readonly code: string;

  constructor(status: number, code: string, message: string) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Reads the whole body (at most `limit` bytes) and parses it as one JSON object. */
export async function readJsonObject(
  req: IncomingMessage,
  limit = DEFAULT_MAX_BODY_BYTES,
): Promise<Record<string, unknown>> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase();
  if (type !== 'application/json') {
    throw new HttpProblem(415, 'unsupported_media_type', 'send application/json');
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new HttpProblem(413, 'too_large', `the body is over ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpProblem(400, 'malformed', 'the body is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new HttpProblem(400, 'malformed', 'the body must be a JSON object');
  }
  return value as Record<string, unknown>;
}

/** Refuses members other than `allowed`, so a typo is an error rather than a silently ignored switch. */
export function onlyMembers(body: Record<string, unknown>, allowed: readonly string[]): void {
  const unknown = Object.keys(body).filter((k) => !allowed.includes(k));
  if (unknown.length > 0) throw new HttpProblem(400, 'malformed', `unknown member: ${unknown.join(', ')}`);
}

/** The bearer token of the Authorization header, or undefined. */
export function bearerToken(req: IncomingMessage): string | undefined {
  const m = /^Bearer\s+([A-Za-z0-9._~+/-]+=*)\s*$/i.exec(req.headers.authorization ?? '');
  return m?.[1];
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

/** The one place a handler's failure becomes a reply: a known problem as itself, anything else as a bare 500. */
export function sendProblem(res: ServerResponse, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (err instanceof HttpProblem) {
    sendJson(res, err.status, { error: { code: err.code, message: err.message } });
    return;
  }
  sendJson(res, 500, { error: { code: 'internal', message: 'internal error' } });
}

/** host:port → parts; `flag` names the setting in the error. */
export function parseListen(value: string, flag: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`${flag} must be HOST:PORT, got "${value}"`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port };
}

export interface JsonServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Serves `handle` on host:port (port 0 picks one): an HttpProblem becomes its JSON reply, anything else is logged
 * with `failure` and answered as a generic problem. close() is idempotent and runs `onClose` after the listener.
 */
export async function serveJson(
  handle: (req: IncomingMessage, res: ServerResponse) => Promise<void>,
  opts: {
    readonly host?: string;
    readonly port?: number;
    readonly requestTimeoutMs: number;
    readonly failure: string;
    readonly log?: { warn(obj: object, msg: string): void };
    readonly onClose?: () => Promise<void>;
  },
): Promise<JsonServer> {
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!(err instanceof HttpProblem)) opts.log?.warn({ err: (err as Error).message }, opts.failure);
      sendProblem(res, err);
    });
  });
  server.requestTimeout = opts.requestTimeoutMs;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }).then(() => opts.onClose?.());
      return closing;
    },
  };
}
