// The agent-facing JSON-RPC wire: strict reading of one message, and the one place a gateway error becomes a response.
import type { ServerResponse } from 'node:http';
import { ERRORS, type ErrorCode } from '../errors.ts';
import { isPlainObject } from '../policy/action.ts';
import { DECISION_HEADER } from '../server/http-errors.ts';
import { parseStrictJson } from '../server/strict-json.ts';

export type JsonRpcId = string | number;

export type RpcMessage =
  | {
      readonly kind: 'request';
      readonly id: JsonRpcId;
      readonly method: string;
      readonly params: Readonly<Record<string, unknown>> | undefined;
    }
  | { readonly kind: 'notification'; readonly method: string }
  | { readonly kind: 'response' }
  | { readonly kind: 'invalid'; readonly fault: Fault; readonly id: JsonRpcId | null };

/**
 * Every way a message can fail, with its JSON-RPC code and the registry code the agent sees.
 * Denials share -32010 and upstream failures -32011: -32000/-32001 are taken by the SDK
 * (ConnectionClosed, RequestTimeout), and a client may retry a "timeout" that was really a denial.
 */
export const FAULTS = {
  parse: { rpc: -32700, code: 'SIDECAR_ERR_REQUEST_MALFORMED', status: 400 },
  batch: { rpc: -32600, code: 'SIDECAR_ERR_REQUEST_MALFORMED', status: 400 },
  invalidRequest: { rpc: -32600, code: 'SIDECAR_ERR_REQUEST_MALFORMED', status: 400 },
  methodNotFound: { rpc: -32601, code: 'SIDECAR_ERR_NOT_FOUND', status: 200 },
  invalidParams: { rpc: -32602, code: 'SIDECAR_ERR_REQUEST_MALFORMED', status: 200 },
  tooLarge: { rpc: -32600, code: 'SIDECAR_ERR_REQUEST_TOO_LARGE', status: 413 },
  unsupportedMediaType: { rpc: -32600, code: 'SIDECAR_ERR_UNSUPPORTED_MEDIA_TYPE', status: 415 },
  unsupportedVersion: { rpc: -32600, code: 'SIDECAR_ERR_REQUEST_MALFORMED', status: 400 },
  methodNotAllowed: { rpc: -32600, code: 'SIDECAR_ERR_METHOD_NOT_ALLOWED', status: 405 },
  // A browser page (DNS rebinding) is the only kind of client that sends Origin; agents do not.
  forbiddenOrigin: { rpc: -32600, code: 'SIDECAR_ERR_POLICY_DENIED', status: 403 },
  notFound: { rpc: -32600, code: 'SIDECAR_ERR_NOT_FOUND', status: 404 },
  internal: { rpc: -32603, code: 'SIDECAR_ERR_INTERNAL', status: 500 },
} as const satisfies Record<string, { rpc: number; code: ErrorCode; status: number }>;
export type Fault = keyof typeof FAULTS;

/** The JSON-RPC code of a request-level refusal: one for every denial, one for every upstream failure. */
export const DENIED_RPC_CODE = -32010;
export const UPSTREAM_RPC_CODE = -32011;

export function rpcCodeOf(code: ErrorCode): number {
  if (code.startsWith('SIDECAR_ERR_UPSTREAM_')) return UPSTREAM_RPC_CODE;
  if (code === 'SIDECAR_ERR_INTERNAL') return -32603;
  return DENIED_RPC_CODE;
}

const TOP_LEVEL_KEYS = new Set(['jsonrpc', 'id', 'method', 'params', 'result', 'error']);
const MAX_ID_LENGTH = 256;

const isId = (v: unknown): v is JsonRpcId =>
  (typeof v === 'string' && v.length <= MAX_ID_LENGTH) || Number.isSafeInteger(v);

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Reads one JSON-RPC message: strict UTF-8, no duplicate keys, no batches, no unknown members. */
export function readMessage(body: Buffer): RpcMessage {
  let text: string;
  try {
    text = UTF8.decode(body);
  } catch {
    return { kind: 'invalid', fault: 'parse', id: null };
  }
  const parsed = parseStrictJson(text, { exactNumbers: true });
  if (!parsed.ok) return { kind: 'invalid', fault: 'parse', id: null };
  const msg = parsed.value;
  if (Array.isArray(msg)) return { kind: 'invalid', fault: 'batch', id: null };
  if (!isPlainObject(msg)) return { kind: 'invalid', fault: 'invalidRequest', id: null };
  const id = 'id' in msg && isId(msg['id']) ? msg['id'] : null;
  const invalid = { kind: 'invalid', fault: 'invalidRequest', id } as const;
  if (msg['jsonrpc'] !== '2.0') return invalid;
  for (const key of Object.keys(msg)) if (!TOP_LEVEL_KEYS.has(key)) return invalid;

  if ('method' in msg) {
    const method = msg['method'];
    if (typeof method !== 'string' || method === '' || 'result' in msg || 'error' in msg) return invalid;
    const params = msg['params'];
    if (params !== undefined && !isPlainObject(params)) {
      return { kind: 'invalid', fault: 'invalidParams', id };
    }
    if (!('id' in msg)) return { kind: 'notification', method };
    // MCP: a request id is a string or an integer, never null.
    if (id === null) return invalid;
    return { kind: 'request', id, method, params };
  }
  if ('result' in msg !== 'error' in msg && 'id' in msg) return { kind: 'response' };
  return invalid;
}

export { isJsonContentType } from '../server/body.ts';

// ---- responses: every body the gateway writes is built here ----

const HEADERS = { 'content-type': 'application/json', 'cache-control': 'no-store' } as const;

/** The error body: code, message and data come only from the registry and the decision id. */
export function errorBody(id: JsonRpcId | null, rpc: number, code: ErrorCode, decisionId?: string): string {
  const data = decisionId === undefined ? { code } : { code, decision_id: decisionId };
  return JSON.stringify({ jsonrpc: '2.0', id, error: { code: rpc, message: ERRORS[code].message, data } });
}

export function sendFault(res: ServerResponse, fault: Fault, id: JsonRpcId | null = null): void {
  const f = FAULTS[fault];
  const extra: Record<string, string> = fault === 'methodNotAllowed' ? { allow: 'POST' } : {};
  send(res, f.status, errorBody(id, f.rpc, f.code), extra);
}

/** A refusal or upstream failure of one request: HTTP 200, so MCP clients surface the JSON-RPC error itself. */
export function sendRefusal(res: ServerResponse, id: JsonRpcId, code: ErrorCode, decisionId: string): void {
  send(res, 200, errorBody(id, rpcCodeOf(code), code, decisionId), { [DECISION_HEADER]: decisionId });
}

/** A result, spliced in as already-serialised JSON (the cached tool list) or serialised here. */
export function sendResult(
  res: ServerResponse,
  id: JsonRpcId,
  result: unknown,
  opts: { readonly serialized?: boolean; readonly decisionId?: string } = {},
): void {
  const json = opts.serialized ? (result as string) : JSON.stringify(result);
  const body = `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":${json}}`;
  send(res, 200, body, opts.decisionId === undefined ? {} : { [DECISION_HEADER]: opts.decisionId });
}

export function sendAccepted(res: ServerResponse): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(202, { 'content-length': '0', 'cache-control': 'no-store' });
  res.end();
}

function send(res: ServerResponse, status: number, body: string, extra: Record<string, string>): void {
  if (res.headersSent) return void res.destroy();
  if (res.destroyed) return;
  res.writeHead(status, { ...HEADERS, 'content-length': Buffer.byteLength(body), ...extra });
  res.end(body);
}
