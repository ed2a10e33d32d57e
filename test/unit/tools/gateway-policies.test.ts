// The helpdesk roles end to end: agent (SDK client) -> sidecar gateway (real policy, audit) -> helpdesk MCP server.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';
import { ERRORS } from '../../../sidecar/errors.ts';
import {
  connectAgent,
  identityConfig,
  ROLES,
  type Role,
  rawPost,
  roleKeyFiles,
  rpc,
  type StartedSidecar,
  startGatewaySidecar,
  startHelpdesk,
  startIdp,
  tempDir,
} from './support.ts';

const SUBS: Record<Role, string> = { 'basic-user': 'u-1001', 'support-agent': 'staff-7', admin: 'admin-1' };

let dir: string;
let helpdesk: HelpdeskToolServer;
let idp: Awaited<ReturnType<typeof startIdp>>;
const sidecars = new Map<Role, StartedSidecar>();
const agents = new Map<Role, Client>();

beforeAll(async () => {
  dir = await tempDir('mcp-policies');
  const keys = await roleKeyFiles(dir);
  helpdesk = await startHelpdesk(keys.roleKeys);
  idp = await startIdp(dir);
  for (const role of ROLES) {
    const started = await startGatewaySidecar({
      policy: { file: `${role}.yaml` },
      mcp: {
        upstreams: [{ name: 'helpdesk', url: helpdesk.url }],
        context: { key_file: keys.privateFiles.get(role) as string },
      },
      identity: identityConfig(idp.jwksFile),
    });
    sidecars.set(role, started);
    agents.set(role, await connectAgent(started.url, await idp.issue({ sub: SUBS[role], role })));
  }
});

afterAll(async () => {
  for (const a of agents.values()) await a.close();
  for (const s of sidecars.values()) await s.close();
  await helpdesk?.close();
  await rm(dir, { recursive: true, force: true });
});

const agent = (role: Role) => agents.get(role) as Client;
const sidecar = (role: Role) => sidecars.get(role) as StartedSidecar;

describe('tools/list: each role sees only what its policy could allow', () => {
  it.each([
    { role: 'basic-user', tools: ['query_knowledge_base', 'submit_ticket', 'get_user_info'] },
    {
      role: 'support-agent',
      tools: ['query_knowledge_base', 'submit_ticket', 'get_user_info', 'list_all_tickets'],
    },
    {
      role: 'admin',
      tools: ['query_knowledge_base', 'submit_ticket', 'get_user_info', 'list_all_tickets', 'delete_user'],
    },
  ] as const)('$role', async ({ role, tools }) => {
    const { tools: listed } = await agent(role).listTools();
    expect(listed.map((t) => t.name).sort()).toEqual([...tools].sort());
  });

  it('passes descriptions and input schemas through unchanged', async () => {
    const direct = new Client({ name: 'direct', version: '0' });
    await direct.connect(new StreamableHTTPClientTransport(new URL(helpdesk.url)));
    const upstream = (await direct.listTools()).tools;
    await direct.close();
    const viaSidecar = (await agent('admin').listTools()).tools;
    for (const tool of viaSidecar) {
      const original = upstream.find((t) => t.name === tool.name);
      expect(tool.description).toBe(original?.description);
      expect(tool.inputSchema).toEqual(original?.inputSchema);
      expect(tool.annotations).toEqual(original?.annotations);
    }
  });

  it('follows a policy reload: the list is filtered with the policy in force at request time', async () => {
    const s = sidecar('support-agent');
    const narrowed = `version: 1
agent: "support-agent"
rules:
  - name: "kb-only"
    action: tool_call
    conditions: { tool: { equals: "query_knowledge_base" } }
    effect: ALLOW
`;
    const original = await readFile(s.policyFile, 'utf8');
    await writeFile(s.policyFile, narrowed);
    expect((await s.sidecar.policies.reload('test')).ok).toBe(true);
    const { tools } = await connectAgent(s.url).then(async (c) => {
      const r = await c.listTools();
      await c.close();
      return r;
    });
    expect(tools.map((t) => t.name)).toEqual(['query_knowledge_base']);
    await writeFile(s.policyFile, original);
    expect((await s.sidecar.policies.reload('test')).ok).toBe(true);
    expect((await agent('support-agent').listTools()).tools).toHaveLength(4);
  });
});

type Expect = 'ok' | 'denied';
const CALLS: ReadonlyArray<{
  note: string;
  role: Role;
  tool: string;
  args: Record<string, unknown>;
  want: Expect;
}> = [
  {
    note: 'kb search',
    role: 'basic-user',
    tool: 'query_knowledge_base',
    args: { query: 'password' },
    want: 'ok',
  },
  {
    note: 'low-priority ticket',
    role: 'basic-user',
    tool: 'submit_ticket',
    args: { subject: 'Login', body: 'Cannot log in', priority: 'low' },
    want: 'ok',
  },
  {
    note: 'high priority is not for basic users',
    role: 'basic-user',
    tool: 'submit_ticket',
    args: { subject: 'Login', body: 'Cannot log in', priority: 'high' },
    want: 'denied',
  },
  {
    note: 'own profile (sub)',
    role: 'basic-user',
    tool: 'get_user_info',
    args: { user_id: 'u-1001' },
    want: 'ok',
  },
  {
    note: "someone else's profile",
    role: 'basic-user',
    tool: 'get_user_info',
    args: { user_id: 'u-1002' },
    want: 'denied',
  },
  {
    note: 'user_id of the wrong type',
    role: 'basic-user',
    tool: 'get_user_info',
    args: { user_id: 1001 },
    want: 'denied',
  },
  { note: 'hidden tool', role: 'basic-user', tool: 'list_all_tickets', args: {}, want: 'denied' },
  {
    note: 'hidden admin tool',
    role: 'basic-user',
    tool: 'delete_user',
    args: { user_id: 'u-1002' },
    want: 'denied',
  },
  {
    note: 'any profile',
    role: 'support-agent',
    tool: 'get_user_info',
    args: { user_id: 'u-1002' },
    want: 'ok',
  },
  {
    note: 'all tickets',
    role: 'support-agent',
    tool: 'list_all_tickets',
    args: { status: 'open' },
    want: 'ok',
  },
  {
    note: 'high priority',
    role: 'support-agent',
    tool: 'submit_ticket',
    args: { subject: 'Outage', body: 'Everything is down', priority: 'high' },
    want: 'ok',
  },
  {
    note: 'no deleting',
    role: 'support-agent',
    tool: 'delete_user',
    args: { user_id: 'u-1002' },
    want: 'denied',
  },
  { note: 'all tickets', role: 'admin', tool: 'list_all_tickets', args: {}, want: 'ok' },
  {
    note: 'admins are never deleted',
    role: 'admin',
    tool: 'delete_user',
    args: { user_id: 'admin-9' },
    want: 'denied',
  },
];

describe('tools/call: policy per role, argument conditions, claims', () => {
  it.each(CALLS)('$role $tool: $note -> $want', async ({ role, tool, args, want }) => {
    const before = helpdesk.calls.length;
    if (want === 'ok') {
      const result = await agent(role).callTool({ name: tool, arguments: args });
      expect(result.isError ?? false).toBe(false);
      const record = helpdesk.calls.at(-1);
      // The tool server verified the context token itself: role and end user come from the signed token.
      expect(record).toMatchObject({ tool, role, sub: SUBS[role], ok: true, reason: null });
      const audit = await sidecar(role).audit();
      const entry = audit.find((e) => e.decision_id === record?.decisionId);
      expect(entry).toMatchObject({ kind: 'tool', effect: 'ALLOW', extra: { end_user: SUBS[role] } });
      expect(entry?.action).toMatchObject({ type: 'tool_call', tool });
    } else {
      const err = await agent(role)
        .callTool({ name: tool, arguments: args })
        .then(
          () => undefined,
          (e: unknown) => e,
        );
      expect(err).toBeInstanceOf(McpError);
      expect((err as McpError).code).toBe(-32010);
      expect((err as McpError).data).toMatchObject({ code: 'SIDECAR_ERR_POLICY_DENIED' });
      expect((err as McpError).message).toContain(ERRORS.SIDECAR_ERR_POLICY_DENIED.message);
      expect((err as McpError).message).not.toContain(tool);
      expect(helpdesk.calls.length).toBe(before);
      const decisionId = ((err as McpError).data as { decision_id: string }).decision_id;
      const entry = (await sidecar(role).audit()).find((e) => e.decision_id === decisionId);
      expect(entry).toMatchObject({ kind: 'tool', effect: 'DENY' });
    }
  });

  it('files the ticket under the verified end user, not under anything the agent says', async () => {
    const result = await agent('basic-user').callTool({
      name: 'submit_ticket',
      arguments: { subject: 'Refund', body: 'Please refund', priority: 'normal' },
    });
    const text = (result.content as Array<{ text: string }>)[0]?.text ?? '';
    expect(JSON.parse(text)).toMatchObject({ ticket: { user_id: 'u-1001' } });
  });
});

describe('no state leaks between concurrent end users', () => {
  it('40 interleaved calls from 5 users: each token, decision and tool-server record belongs to its own call', async () => {
    const users = ['u-1001', 'u-1002', 'u-1003', 'u-1004', 'u-1005'];
    const tokens = new Map(
      await Promise.all(
        users.map(async (u) => [u, await idp.issue({ sub: u, role: 'basic-user' })] as const),
      ),
    );
    const calls = Array.from({ length: 40 }, (_, i) => {
      const sub = users[i % users.length] as string;
      // Every fourth call asks for someone else's profile: it must be denied, whatever runs beside it.
      const target = i % 4 === 3 ? (users[(i + 1) % users.length] as string) : sub;
      return { sub, target };
    });
    const url = sidecar('basic-user').url;
    const results = await Promise.all(
      calls.map(({ sub, target }, i) =>
        rawPost(url, rpc('tools/call', { name: 'get_user_info', arguments: { user_id: target } }, i), {
          authorization: `Bearer ${tokens.get(sub)}`,
        }),
      ),
    );
    results.forEach((r, i) => {
      const { sub, target } = calls[i] as { sub: string; target: string };
      const decisionId = r.headers.get('x-sidecar-decision-id');
      if (sub === target) {
        expect(r.json).toMatchObject({ id: i, result: { content: expect.any(Array) } });
        const text =
          (r.json as { result: { content: Array<{ text: string }> } }).result.content[0]?.text ?? '';
        expect(JSON.parse(text)).toMatchObject({ user: { id: target } });
        expect(helpdesk.calls.find((c) => c.decisionId === decisionId)).toMatchObject({ sub, ok: true });
      } else {
        expect(r.json).toMatchObject({ id: i, error: { data: { code: 'SIDECAR_ERR_POLICY_DENIED' } } });
        expect(helpdesk.calls.find((c) => c.decisionId === decisionId)).toBeUndefined();
      }
    });
  });
});

describe('context tokens', () => {
  it('the tool server refuses a call that does not come through a sidecar', async () => {
    const direct = new Client({ name: 'bypass', version: '0' });
    await direct.connect(new StreamableHTTPClientTransport(new URL(helpdesk.url)));
    const before = helpdesk.calls.length;
    const result = await direct.callTool({ name: 'delete_user', arguments: { user_id: 'u-1002' } });
    await direct.close();
    expect(result.isError).toBe(true);
    expect(helpdesk.calls.length).toBe(before + 1);
    expect(helpdesk.calls.at(-1)).toMatchObject({
      tool: 'delete_user',
      ok: false,
      reason: 'missing',
      role: null,
    });
    expect(helpdesk.db.getUser('u-1002')).toBeDefined();
  });

  it("one role's sidecar key cannot get another role's tool run: the tool server checks its own allowlist", async () => {
    // A support policy that (wrongly) allows delete_user: the sidecar forwards, the tool server still refuses.
    const dir2 = await tempDir('mcp-lax');
    const keys = await roleKeyFiles(dir2);
    const lax = await startHelpdesk(keys.roleKeys);
    const s = await startGatewaySidecar({
      policy: {
        text: `version: 1
agent: "support-agent"
rules:
  - name: "too-broad"
    action: tool_call
    conditions: { tool: { in: ["delete_user"] } }
    effect: ALLOW
`,
      },
      mcp: {
        upstreams: [{ name: 'helpdesk', url: lax.url }],
        context: { key_file: keys.privateFiles.get('support-agent') as string },
      },
    });
    const c = await connectAgent(s.url);
    const result = await c.callTool({ name: 'delete_user', arguments: { user_id: 'u-1002' } });
    expect(result.isError).toBe(true);
    expect(lax.calls.at(-1)).toMatchObject({ tool: 'delete_user', ok: false, reason: 'role_not_allowed' });
    expect(lax.db.getUser('u-1002')).toBeDefined();
    await c.close();
    await s.close();
    await lax.close();
    await rm(dir2, { recursive: true, force: true });
  });
});
