// The demo helpdesk MCP tool server: five tools over Streamable HTTP, each call admitted only on a valid context token.
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { CallToolResult, RequestInfo } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import { ERRORS } from '../../sidecar/errors.ts';
import type { ContextRefusalReason, RoleKeySource } from '../../sidecar/identity/context-token.ts';
import { CONTEXT_HEADER, verifyContextToken } from '../../sidecar/identity/context-token.ts';
import type { HelpdeskDb } from './db.ts';
import { openHelpdeskDb, TICKET_PRIORITIES, TICKET_STATUSES } from './db.ts';

export const HELPDESK_TOOLS = [
  'query_knowledge_base',
  'submit_ticket',
  'get_user_info',
  'list_all_tickets',
  'delete_user',
] as const;
export type HelpdeskTool = (typeof HELPDESK_TOOLS)[number];

/** The tool server's own view of who may call what; it does not take the sidecar's word for it. */
export const DEFAULT_HELPDESK_ALLOWLIST: Readonly<Record<string, readonly HelpdeskTool[]>> = Object.freeze({
  'basic-user': ['query_knowledge_base', 'submit_ticket', 'get_user_info'],
  'support-agent': ['query_knowledge_base', 'submit_ticket', 'get_user_info', 'list_all_tickets'],
  admin: [...HELPDESK_TOOLS],
});

/**
 * Roles that may use a tool only about themselves: the argument named here must equal the `sub` the sidecar
 * vouched for. The tool server's own check, independent of the sidecar's policy (belt and suspenders).
 */
export const SELF_ONLY: Readonly<Record<string, Partial<Record<HelpdeskTool, string>>>> = Object.freeze({
  'basic-user': { get_user_info: 'user_id' },
});

export interface HelpdeskToolServerOptions {
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 0 (an ephemeral port). */
  readonly port?: number;
  /** SQLite file, or ':memory:' (default). */
  readonly dbPath?: string;
  /** Public keys per role, e.g. from loadPublicKeys(). */
  readonly roleKeys: RoleKeySource;
  readonly allowlist?: Readonly<Record<string, readonly string[]>>;
  /** Default true. When false, calls without a valid token run anonymously (a demo of what the token prevents). */
  readonly requireContext?: boolean;
  readonly audience?: string;
  /** Clock in milliseconds since the epoch, for token lifetimes and ticket timestamps. */
  readonly now?: () => number;
  /** Receives one line per tool call. */
  readonly logger?: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
}

/** One tool call as the server decided it. `role`/`sub` come only from a verified token. */
export interface ToolCallRecord {
  readonly tool: string;
  readonly role: string | null;
  readonly sub: string | null;
  readonly ok: boolean;
  /** Why the call was refused; null when it ran. */
  readonly reason: ContextRefusalReason | 'not_self' | 'internal_error' | null;
  /** The sidecar's decision id (token jti), to join with its audit chain. */
  readonly decisionId: string | null;
}

export interface HelpdeskToolServer {
  /** The MCP endpoint, e.g. http://127.0.0.1:43121/mcp */
  readonly url: string;
  /** The most recent tool calls (up to 1,000), oldest first. */
  readonly calls: ToolCallRecord[];
  /** The server's database, for inspection by tests and demos. */
  readonly db: HelpdeskDb;
  close(): Promise<void>;
}

interface Caller {
  readonly role: string | null;
  readonly sub: string | null;
  readonly decisionId: string | null;
}

const MCP_PATH = '/mcp';
/** `calls` is for tests and inspection; a long-running server keeps only the most recent records. */
const MAX_CALL_RECORDS = 1000;

export async function startHelpdeskToolServer(opts: HelpdeskToolServerOptions): Promise<HelpdeskToolServer> {
  const db = openHelpdeskDb(opts.dbPath ?? ':memory:', opts.now === undefined ? {} : { now: opts.now });
  const calls: ToolCallRecord[] = [];
  const deps: Deps = { ...opts, db, calls, allowlist: opts.allowlist ?? DEFAULT_HELPDESK_ALLOWLIST };
  const http = createServer((req, res) => {
    void handleHttp(req, res, deps);
  });
  try {
    await listen(http, opts.port ?? 0, opts.host ?? '127.0.0.1');
  } catch (err) {
    db.close();
    throw err;
  }
  const { address, port } = http.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  let closed: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}${MCP_PATH}`,
    calls,
    db,
    close() {
      closed ??= new Promise<void>((resolve) => {
        http.close(() => resolve());
        http.closeAllConnections();
      }).finally(() => db.close());
      return closed;
    },
  };
}

interface Deps extends HelpdeskToolServerOptions {
  readonly db: HelpdeskDb;
  readonly calls: ToolCallRecord[];
  readonly allowlist: Readonly<Record<string, readonly string[]>>;
}

// Stateless Streamable HTTP: a fresh McpServer and transport per POST. Every call carries its whole context in
// the token, so the server keeps no per-client state: no session table to bound or expire, no session id that
// could outlive or stand in for a token, and any replica can answer any request.
async function handleHttp(req: IncomingMessage, res: ServerResponse, deps: Deps): Promise<void> {
  try {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (path === '/healthz' && req.method === 'GET') return sendJson(res, 200, { ok: true });
    if (path !== MCP_PATH)
      return sendJson(res, 404, { error: { code: 'SIDECAR_ERR_NOT_FOUND', ...msg('NOT_FOUND') } });
    if (req.method !== 'POST') {
      // No standalone SSE stream (GET) and no sessions to DELETE in stateless mode.
      res.setHeader('allow', 'POST');
      return sendJson(res, 405, {
        jsonrpc: '2.0',
        error: { code: -32000, ...msg('METHOD_NOT_ALLOWED') },
        id: null,
      });
    }
    const mcp = buildMcpServer(deps);
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: undefined,
      enableJsonResponse: true,
    });
    res.on('close', () => {
      void transport.close();
      void mcp.close();
    });
    await mcp.connect(transport);
    await transport.handleRequest(req, res);
  } catch (err) {
    deps.logger?.warn({ err }, 'helpdesk request failed');
    if (!res.headersSent)
      sendJson(res, 500, { jsonrpc: '2.0', error: { code: -32603, ...msg('INTERNAL') }, id: null });
    else res.destroy();
  }
}

// Input schemas are strict and transform-free: the parsed arguments are exactly the arguments on the wire, so the
// hash the verifier computes over them equals the one the sidecar signed (an extra key is refused, not stripped).
const QueryKnowledgeBase = z.strictObject({
  query: z.string().min(1).max(500).describe('Words to look for, e.g. "reset password".'),
});
const SubmitTicket = z.strictObject({
  subject: z.string().min(1).max(200).describe('One-line summary.'),
  body: z.string().min(1).max(5000).describe('What happened and what the user expected.'),
  priority: z.enum(TICKET_PRIORITIES).describe('low, normal or high.'),
});
const UserId = z.strictObject({ user_id: z.string().min(1).max(64).describe('A user id such as "u-1001".') });
const ListAllTickets = z.strictObject({
  status: z.enum(TICKET_STATUSES).optional().describe('Only tickets with this status.'),
});

function buildMcpServer(deps: Deps): McpServer {
  const { db } = deps;
  const mcp = new McpServer({ name: 'helpdesk-tools', version: '0.1.0' });
  // tools/list shows every tool: the sidecar filters the list per role; the refusal happens here, on call.
  mcp.registerTool(
    'query_knowledge_base',
    { description: 'Search the help center articles.', inputSchema: QueryKnowledgeBase },
    (args, extra) =>
      admit(deps, 'query_knowledge_base', args, extra, () => ({
        articles: db.searchKnowledgeBase(args.query),
      })),
  );
  mcp.registerTool(
    'submit_ticket',
    {
      description: 'Open a support ticket on behalf of the signed-in user.',
      inputSchema: SubmitTicket,
    },
    (args, extra) =>
      admit(deps, 'submit_ticket', args, extra, (caller) => {
        // The ticket belongs to the end user the sidecar vouched for, never to a user named in the arguments.
        const userId = caller.sub !== null && db.getUser(caller.sub) !== undefined ? caller.sub : null;
        return { ticket: db.createTicket({ userId, ...args }) };
      }),
  );
  mcp.registerTool(
    'get_user_info',
    { description: 'Look up a customer account by user id.', inputSchema: UserId },
    (args, extra) =>
      admit(deps, 'get_user_info', args, extra, () => {
        const user = db.getUser(args.user_id);
        return user === undefined ? NOT_FOUND : { user };
      }),
  );
  mcp.registerTool(
    'list_all_tickets',
    { description: 'List support tickets, optionally by status.', inputSchema: ListAllTickets },
    (args, extra) =>
      admit(deps, 'list_all_tickets', args, extra, () => ({ tickets: db.listTickets(args.status) })),
  );
  mcp.registerTool(
    'delete_user',
    {
      description: 'Permanently delete a customer account and its tickets.',
      inputSchema: UserId,
      annotations: { destructiveHint: true },
    },
    (args, extra) =>
      admit(deps, 'delete_user', args, extra, () =>
        db.deleteUser(args.user_id) ? { deleted: true } : NOT_FOUND,
      ),
  );
  return mcp;
}

/** What a tool returns for a missing row: an isError result, but one the caller's own query explains. */
const NOT_FOUND = Symbol('not found');

/**
 * The gate in front of every tool: verify the context token for this exact tool and these exact arguments
 * against this server's own allowlist, and only then run. A refusal is an MCP tool result with isError set and
 * one generic message, whatever the reason: the caller learns nothing about roles, tokens or other tools.
 */
async function admit(
  deps: Deps,
  tool: HelpdeskTool,
  args: Record<string, unknown>,
  extra: { readonly requestInfo?: RequestInfo | undefined },
  run: (caller: Caller) => object | typeof NOT_FOUND,
): Promise<CallToolResult> {
  const token = extra.requestInfo?.headers[CONTEXT_HEADER];
  const verdict = await verifyContextToken(Array.isArray(token) ? token.join(',') : token, {
    roleKeys: deps.roleKeys,
    allowlist: deps.allowlist,
    tool,
    args,
    ...(deps.audience === undefined ? {} : { audience: deps.audience }),
    ...(deps.now === undefined ? {} : { now: deps.now }),
  });
  let caller: Caller;
  if (verdict.ok) {
    caller = { role: verdict.claims.role, sub: verdict.claims.sub, decisionId: verdict.claims.jti };
    const selfArg = caller.role === null ? undefined : SELF_ONLY[caller.role]?.[tool];
    if (selfArg !== undefined && (caller.sub === null || args[selfArg] !== caller.sub)) {
      record(deps, { tool, ...caller, ok: false, reason: 'not_self' });
      return errorResult('SIDECAR_ERR_POLICY_DENIED');
    }
  } else if (deps.requireContext === false) {
    caller = { role: null, sub: null, decisionId: null };
  } else {
    record(deps, { tool, role: null, sub: null, ok: false, reason: verdict.reason, decisionId: null });
    return errorResult('SIDECAR_ERR_POLICY_DENIED');
  }
  try {
    const out = run(caller);
    record(deps, { tool, ...caller, ok: true, reason: null });
    if (out === NOT_FOUND)
      return { content: [{ type: 'text', text: JSON.stringify({ error: 'not_found' }) }], isError: true };
    return { content: [{ type: 'text', text: JSON.stringify(out) }] };
  } catch (err) {
    deps.logger?.warn({ tool, err }, 'helpdesk tool failed');
    record(deps, { tool, ...caller, ok: false, reason: 'internal_error' });
    return errorResult('SIDECAR_ERR_INTERNAL');
  }
}

function record(deps: Deps, call: ToolCallRecord): void {
  deps.calls.push(call);
  if (deps.calls.length > MAX_CALL_RECORDS) deps.calls.splice(0, deps.calls.length - MAX_CALL_RECORDS);
  const msg = call.ok
    ? 'tool call ran'
    : call.reason === 'internal_error'
      ? 'tool call failed'
      : 'tool call refused';
  deps.logger?.info({ ...call }, msg);
}

function errorResult(code: 'SIDECAR_ERR_POLICY_DENIED' | 'SIDECAR_ERR_INTERNAL'): CallToolResult {
  return {
    content: [{ type: 'text', text: JSON.stringify({ error: { code, message: ERRORS[code].message } }) }],
    isError: true,
  };
}

function msg(code: 'NOT_FOUND' | 'METHOD_NOT_ALLOWED' | 'INTERNAL'): { message: string } {
  return { message: ERRORS[`SIDECAR_ERR_${code}`].message };
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

function listen(server: Server, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
