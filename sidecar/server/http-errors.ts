// The one place an error becomes an HTTP response: a uniform JSON body with a code and a decision id, nothing else.
import type { ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { ERRORS, type ErrorCode } from '../errors.ts';

export const DECISION_HEADER = 'x-sidecar-decision-id';

export function errorBody(code: ErrorCode, decisionId?: string): string {
  return JSON.stringify({
    error: { code, message: ERRORS[code].message, ...(decisionId ? { decision_id: decisionId } : {}) },
  });
}

/** A JSON answer with its length: health, readiness, decisions, the admin API. */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Readonly<Record<string, string>> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export function sendError(res: ServerResponse, code: ErrorCode, decisionId?: string): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = errorBody(code, decisionId);
  res.writeHead(ERRORS[code].status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...(decisionId ? { [DECISION_HEADER]: decisionId } : {}),
  });
  res.end(body);
}

/** For CONNECT and raw sockets: write a complete HTTP/1.1 error response and close. */
export function writeSocketError(socket: Duplex, code: ErrorCode, decisionId?: string): void {
  if (socket.destroyed) return;
  const body = errorBody(code, decisionId);
  const status = ERRORS[code].status;
  const head = [
    `HTTP/1.1 ${status} ${statusText(status)}`,
    'content-type: application/json',
    `content-length: ${Buffer.byteLength(body)}`,
    'connection: close',
    ...(decisionId ? [`${DECISION_HEADER}: ${decisionId}`] : []),
  ].join('\r\n');
  socket.end(`${head}\r\n\r\n${body}`);
}

function statusText(status: number): string {
  const texts: Record<number, string> = {
    400: 'Bad Request',
    401: 'Unauthorized',
    403: 'Forbidden',
    404: 'Not Found',
    405: 'Method Not Allowed',
    408: 'Request Timeout',
    413: 'Payload Too Large',
    415: 'Unsupported Media Type',
    429: 'Too Many Requests',
    431: 'Request Header Fields Too Large',
    500: 'Internal Server Error',
    502: 'Bad Gateway',
    503: 'Service Unavailable',
    504: 'Gateway Timeout',
  };
  return texts[status] ?? 'Error';
}
