// The helpdesk MCP server over real HTTP with the official SDK client: allowed calls reach sqlite, refused ones don't.
import { randomUUID } from 'node:crypto';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { HelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';
import { HELPDESK_TOOLS, startHelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';
import { ERRORS } from '../../../sidecar/errors.ts';
import type { KeyLike, SigningKey } from '../../../sidecar/identity/context-token.ts';
import {
  CONTEXT_HEADER,
  mintContextToken,
  withContextHeader,
} from '../../../sidecar/identity/context-token.ts';
import {
  generateRoleKeyPair,
  importSigningKey,
  importVerificationKeys,
} from '../../../sidecar/identity/keys.ts';

const ROLES = ['basic-user', 'support-agent', 'admin'] as const;
type Role = (typeof ROLES)[number];

const signingKeys = new Map<Role, SigningKey>();
const roleKeys = new Map<string, KeyLike[]>();
let server: HelpdeskToolServer;
const clients: Client[] = [];

beforeAll(async () => {
  for (const role of ROLES) {
    const pair = await generateRoleKeyPair();
    signingKeys.set(role, await importSigningKey(pair.privateJwk));
    roleKeys.set(role, await importVerificationKeys(pair.publicJwk));
  }
  server = await startHelpdeskToolServer({ roleKeys });
});

afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await server?.close();
});

interface Caller {
  /** Role whose sidecar key signs; null sends no token at all. */
  readonly role: Role | null;
  readonly sub?: string | null;
  /** Mint for this tool/args instead of the ones actually sent (a replayed or misbound token). */
  readonly mintFor?: { readonly tool?: string; readonly args?: unknown };
}

/**
 * An SDK client whose fetch adds a context token per tools/call, as the sidecar does when it forwards.
 * The token binds tool name and argument hash, so a static requestInit header cannot carry it.
 */
async function connect(url: string, caller: Caller): Promise<Client> {
  const { role } = caller;
  const key = role === null ? undefined : signingKeys.get(role);
  const fetchWithContext = withContextHeader(({ tool, args }) => {
    if (key === undefined || role === null) throw new Error('no key for this caller');
    return mintContextToken(key, {
      agent: `helpdesk-${role}`,
      role,
      sub: caller.sub === undefined ? 'u-1003' : caller.sub,
      decisionId: randomUUID(),
      tool: caller.mintFor?.tool ?? tool,
      args: caller.mintFor && 'args' in caller.mintFor ? caller.mintFor.args : args,
    });
  });
  const client = new Client({ name: 'helpdesk-test', version: '0.0.0' });
  // No role: the SDK's own fetch, so no context header is sent at all.
  const transport = new StreamableHTTPClientTransport(
    new URL(url),
    role === null ? {} : { fetch: fetchWithContext },
  );
  await client.connect(transport);
  clients.push(client);
  return client;
}

interface CallOutcome {
  readonly isError: boolean;
  readonly text: string;
  readonly json: unknown;
}

async function call(
  caller: Caller,
  tool: string,
  args: Record<string, unknown>,
  url = server.url,
): Promise<CallOutcome> {
  const client = await connect(url, caller);
  const result = await client.callTool({ name: tool, arguments: args });
  const content = result.content as Array<{ type: string; text: string }>;
  const text = content[0]?.text ?? '';
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { isError: result.isError === true, text, json };
}

const DENIED = JSON.stringify({
  error: { code: 'SIDECAR_ERR_POLICY_DENIED', message: ERRORS.SIDECAR_ERR_POLICY_DENIED.message },
});

describe('tools/list', () => {
  it('lists the five tools with descriptions and input schemas', async () => {
    const client = await connect(server.url, { role: 'basic-user' });
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name).sort()).toEqual([...HELPDESK_TOOLS].sort());
    for (const tool of tools) {
      expect(tool.description).toBeTruthy();
      expect(tool.inputSchema).toMatchObject({ type: 'object', additionalProperties: false });
    }
    expect(tools.find((t) => t.name === 'submit_ticket')?.inputSchema.properties).toMatchObject({
      priority: { enum: ['low', 'normal', 'high'] },
    });
  });
});

describe('allowed calls reach sqlite', () => {
  it('query_knowledge_base (basic-user) finds articles', async () => {
    const out = await call({ role: 'basic-user' }, 'query_knowledge_base', { query: 'reset password' });
    expect(out.isError).toBe(false);
    const { articles } = out.json as { articles: Array<{ id: string; title: string }> };
    expect(articles[0]).toMatchObject({ id: 'kb-1', title: 'Resetting your password' });
  });

  it('submit_ticket (basic-user) stores a ticket owned by the verified sub', async () => {
    const before = server.db.countTickets();
    const own = await call({ role: 'basic-user', sub: 'u-1003' }, 'get_user_info', { user_id: 'u-1003' });
    expect(own.isError).toBeFalsy();
    const out = await call({ role: 'basic-user', sub: 'u-1003' }, 'submit_ticket', {
      subject: 'Cannot log in',
      body: 'It says my password is wrong.',
      priority: 'high',
    });
    expect(out.isError).toBe(false);
    expect(out.json).toMatchObject({
      ticket: { user_id: 'u-1003', subject: 'Cannot log in', priority: 'high', status: 'open' },
    });
    expect(server.db.countTickets()).toBe(before + 1);
  });

  it('submit_ticket with no end user (sub null) stores an unowned ticket', async () => {
    const out = await call({ role: 'basic-user', sub: null }, 'submit_ticket', {
      subject: 'Question',
      body: 'Anonymous question',
      priority: 'low',
    });
    expect(out.json).toMatchObject({ ticket: { user_id: null } });
  });

  it('get_user_info (support-agent) returns the user', async () => {
    const out = await call({ role: 'support-agent' }, 'get_user_info', { user_id: 'u-1001' });
    expect(out.json).toEqual({
      user: { id: 'u-1001', name: 'Ada Lovelace', email: 'ada@example.com', plan: 'pro' },
    });
  });

  it('get_user_info for an unknown id is a tool error, not a refusal', async () => {
    const out = await call({ role: 'support-agent' }, 'get_user_info', { user_id: 'u-0000' });
    expect(out).toMatchObject({ isError: true, json: { error: 'not_found' } });
  });

  it('list_all_tickets (support-agent) filters by status', async () => {
    const out = await call({ role: 'support-agent' }, 'list_all_tickets', { status: 'open' });
    const { tickets } = out.json as { tickets: Array<{ status: string }> };
    expect(tickets.length).toBeGreaterThan(0);
    expect(tickets.every((t) => t.status === 'open')).toBe(true);
    const all = await call({ role: 'support-agent' }, 'list_all_tickets', {});
    expect((all.json as { tickets: unknown[] }).tickets.length).toBe(server.db.countTickets());
  });

  it('delete_user (admin) deletes the user', async () => {
    expect(server.db.getUser('u-1005')).toBeDefined();
    const out = await call({ role: 'admin' }, 'delete_user', { user_id: 'u-1005' });
    expect(out.json).toEqual({ deleted: true });
    expect(server.db.getUser('u-1005')).toBeUndefined();
  });

  it('records who called, with the decision id from the token', async () => {
    await call({ role: 'support-agent', sub: 'u-1002' }, 'get_user_info', { user_id: 'u-1002' });
    expect(server.calls.at(-1)).toMatchObject({
      tool: 'get_user_info',
      role: 'support-agent',
      sub: 'u-1002',
      ok: true,
      reason: null,
      decisionId: expect.any(String),
    });
  });
});

interface Refusal {
  readonly name: string;
  readonly caller: Caller;
  readonly tool: string;
  readonly args: Record<string, unknown>;
  readonly reason: string;
}

const REFUSALS: readonly Refusal[] = [
  {
    name: 'no token on delete_user',
    caller: { role: null },
    tool: 'delete_user',
    args: { user_id: 'u-1001' },
    reason: 'missing',
  },
  {
    name: 'a basic-user token on delete_user',
    caller: { role: 'basic-user' },
    tool: 'delete_user',
    args: { user_id: 'u-1001' },
    reason: 'role_not_allowed',
  },
  {
    name: 'a support-agent token on delete_user',
    caller: { role: 'support-agent' },
    tool: 'delete_user',
    args: { user_id: 'u-1001' },
    reason: 'role_not_allowed',
  },
  {
    name: 'an admin token minted for deleting someone else',
    caller: { role: 'admin', mintFor: { args: { user_id: 'u-1002' } } },
    tool: 'delete_user',
    args: { user_id: 'u-1001' },
    reason: 'args_mismatch',
  },
  {
    name: 'an admin token minted for another tool',
    caller: { role: 'admin', mintFor: { tool: 'get_user_info' } },
    tool: 'delete_user',
    args: { user_id: 'u-1001' },
    reason: 'wrong_tool',
  },
  {
    name: "a basic-user token on get_user_info for another user's id",
    caller: { role: 'basic-user', sub: 'u-1003' },
    tool: 'get_user_info',
    args: { user_id: 'u-1001' },
    reason: 'not_self',
  },
  {
    name: 'a basic-user token with no end user on get_user_info',
    caller: { role: 'basic-user', sub: null },
    tool: 'get_user_info',
    args: { user_id: 'u-1001' },
    reason: 'not_self',
  },
  {
    name: 'no token on submit_ticket',
    caller: { role: null },
    tool: 'submit_ticket',
    args: { subject: 's', body: 'b', priority: 'low' },
    reason: 'missing',
  },
];

describe('refused calls do not touch the database', () => {
  it.each(REFUSALS.map((r) => [r.name, r] as const))('%s', async (_name, r) => {
    const users = server.db.countUsers();
    const tickets = server.db.countTickets();
    const out = await call(r.caller, r.tool, r.args);
    expect(out.isError).toBe(true);
    // One generic message whatever the reason: it names no tool, role or token detail.
    expect(out.text).toBe(DENIED);
    expect(server.db.countUsers()).toBe(users);
    expect(server.db.countTickets()).toBe(tickets);
    expect(server.db.getUser('u-1001')).toBeDefined();
    // A token that verified still names its role; only unverifiable calls have none.
    const role = r.reason === 'not_self' ? r.caller.role : null;
    expect(server.calls.at(-1)).toMatchObject({ tool: r.tool, ok: false, reason: r.reason, role });
  });

  it('a garbage header is refused the same way', async () => {
    const client = new Client({ name: 'helpdesk-test', version: '0.0.0' });
    const transport = new StreamableHTTPClientTransport(new URL(server.url), {
      requestInit: { headers: { [CONTEXT_HEADER]: 'admin' } },
    });
    await client.connect(transport);
    clients.push(client);
    const result = await client.callTool({ name: 'delete_user', arguments: { user_id: 'u-1001' } });
    expect(result.isError).toBe(true);
    expect(server.db.getUser('u-1001')).toBeDefined();
    expect(server.calls.at(-1)).toMatchObject({ reason: 'malformed' });
  });

  it('an argument the schema does not know is rejected, not stripped', async () => {
    const out = await call({ role: 'admin' }, 'delete_user', { user_id: 'u-1001', cascade: false });
    expect(out.isError).toBe(true);
    expect(server.db.getUser('u-1001')).toBeDefined();
  });

  it('an unknown tool is an error that lists no other tool', async () => {
    const out = await call({ role: 'admin' }, 'drop_database', {});
    expect(out.isError).toBe(true);
    for (const tool of HELPDESK_TOOLS) expect(out.text).not.toContain(tool);
  });
});

describe('options', () => {
  it('a custom allowlist is the tool server’s own: it can refuse what the default allows', async () => {
    const strict = await startHelpdeskToolServer({ roleKeys, allowlist: { admin: ['delete_user'] } });
    try {
      const out = await call({ role: 'basic-user' }, 'query_knowledge_base', { query: 'refund' }, strict.url);
      expect(out.text).toBe(DENIED);
      expect(strict.calls).toMatchObject([{ reason: 'role_not_allowed' }]);
    } finally {
      await strict.close();
    }
  });

  it('requireContext: false runs calls without a token, anonymously', async () => {
    const open = await startHelpdeskToolServer({ roleKeys: new Map(), requireContext: false });
    try {
      const out = await call({ role: null }, 'delete_user', { user_id: 'u-1004' }, open.url);
      expect(out.json).toEqual({ deleted: true });
      expect(open.calls).toMatchObject([{ tool: 'delete_user', role: null, sub: null, ok: true }]);
    } finally {
      await open.close();
    }
  });

  it('an injected clock makes fresh tokens look expired', async () => {
    const later = await startHelpdeskToolServer({ roleKeys, now: () => Date.now() + 10 * 60_000 });
    try {
      const out = await call({ role: 'admin' }, 'get_user_info', { user_id: 'u-1001' }, later.url);
      expect(out.text).toBe(DENIED);
      expect(later.calls).toMatchObject([{ reason: 'expired' }]);
    } finally {
      await later.close();
    }
  });

  it('a file database keeps its data across restarts', async () => {
    const { mkdtemp, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dir = await mkdtemp(join(tmpdir(), 'helpdesk-db-'));
    try {
      const first = await startHelpdeskToolServer({ roleKeys, dbPath: join(dir, 'helpdesk.db') });
      await call({ role: 'admin' }, 'delete_user', { user_id: 'u-1002' }, first.url);
      await first.close();
      const second = await startHelpdeskToolServer({ roleKeys, dbPath: join(dir, 'helpdesk.db') });
      expect(second.db.getUser('u-1002')).toBeUndefined();
      expect(second.db.getUser('u-1001')).toBeDefined();
      await second.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('HTTP surface', () => {
  it.each([
    ['GET /mcp (no standalone stream in stateless mode)', 'GET', '/mcp', 405],
    ['DELETE /mcp (no sessions)', 'DELETE', '/mcp', 405],
    ['an unknown path', 'POST', '/other', 404],
    ['the health check', 'GET', '/healthz', 200],
  ])('%s', async (_name, method, path, status) => {
    const res = await fetch(new URL(path, server.url), { method });
    expect(res.status).toBe(status);
    expect(res.headers.get('content-type')).toBe('application/json');
    await res.body?.cancel();
  });

  it('listens on loopback by default', () => {
    expect(new URL(server.url).hostname).toBe('127.0.0.1');
  });
});
