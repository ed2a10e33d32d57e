// The demo's agent and router against real in-process sidecars (the roles' policies, MCP and model gateways, end-user
// identity), the helpdesk tool server and the model stand-in: the walkthrough's flows without containers.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCompromised } from '../../../agents/helpdesk-agent/compromised.ts';
import { type AgentServer, startAgentServer } from '../../../agents/helpdesk-agent/server.ts';
import { type HelpdeskToolServer, startHelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';
import { type ModelStub, startModelStub } from '../../../agents/model-stub/server.ts';
import {
  createIssuer,
  DEMO_AUDIENCE,
  DEMO_ISSUER,
  generateIssuerKeyPair,
  type Issuer,
} from '../../../agents/router/issuer.ts';
import { type AgentDirectory, parseMisroutes } from '../../../agents/router/routing.ts';
import { type Router, startRouter } from '../../../agents/router/server.ts';
import { HELPDESK_ROLES, type HelpdeskRole } from '../../../agents/router/users.ts';
import type { AuditEntry } from '../../../sidecar/audit/entry.ts';
import type { KeyLike } from '../../../sidecar/identity/context-token.ts';
import { generateRoleKeyPair, importVerificationKeys } from '../../../sidecar/identity/keys.ts';
import { type Sidecar, startSidecar } from '../../../sidecar/server/sidecar.ts';
import { completeAuditEntries } from '../../support/audit-lines.ts';

const POLICIES = join(import.meta.dirname, '../../../policies');
const MODEL = 'claude-haiku-4-5';

let dir: string;
let tools: HelpdeskToolServer;
let stub: ModelStub;
let issuer: Issuer;
const sidecars = new Map<HelpdeskRole, Sidecar>();
const agents = new Map<HelpdeskRole, AgentServer>();
let router: Router;
let misrouting: Router;

const sidecarUrl = (role: HelpdeskRole) => `http://127.0.0.1:${sidecars.get(role)!.agentAddress.port}`;

async function auditOf(role: HelpdeskRole): Promise<AuditEntry[]> {
  return completeAuditEntries(await readFile(join(dir, role, 'audit', `${role}.audit.jsonl`), 'utf8'));
}

async function post(url: string, body: unknown, token?: string) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  // biome-ignore lint/suspicious/noExplicitAny: the tests read the JSON answers by path.
  return { status: res.status, json: (await res.json()) as Record<string, any> };
}

async function login(user: string, via = router): Promise<string> {
  const r = await post(`${via.url}/login`, { user });
  expect(r.status).toBe(200);
  return r.json['token'] as string;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'demo-flow-'));
  const roleKeys = new Map<string, KeyLike[]>();
  const privateFiles = new Map<HelpdeskRole, string>();
  for (const role of HELPDESK_ROLES) {
    const pair = await generateRoleKeyPair();
    const file = join(dir, `${role}.private.jwk.json`);
    await writeFile(file, JSON.stringify(pair.privateJwk));
    privateFiles.set(role, file);
    roleKeys.set(role, await importVerificationKeys(pair.publicJwk));
  }
  // The production allowlist: the tool server checks every call again, whatever the sidecar decided.
  tools = await startHelpdeskToolServer({ roleKeys });
  stub = await startModelStub();
  const pair = await generateIssuerKeyPair();
  issuer = await createIssuer(pair.privateJwk);
  const jwksFile = join(dir, 'jwks.json');
  await writeFile(jwksFile, JSON.stringify(pair.jwks));
  const keyFile = join(dir, 'model.key');
  await writeFile(keyFile, 'offline-placeholder');

  for (const role of HELPDESK_ROLES) {
    const sidecar = await startSidecar(
      {
        policyPath: join(POLICIES, `${role}.yaml`),
        listen: { host: '127.0.0.1', port: 0 },
        auditDir: join(dir, role, 'audit'),
        watchPolicy: false,
        auditSync: 'never',
        gateways: {
          model: {
            anthropic: { upstream: stub.url, api_key_file: keyFile },
            prices: { 'claude-haiku-4-5*': { input_per_mtok: 1, output_per_mtok: 5 } },
          },
          mcp: {
            upstreams: [{ name: 'helpdesk', url: tools.url }],
            context: { key_file: privateFiles.get(role)! },
          },
          identity: { required: true, jwks_file: jwksFile, issuer: DEMO_ISSUER, audience: DEMO_AUDIENCE },
        },
      },
      pino({ level: 'silent' }),
    );
    sidecars.set(role, sidecar);
    agents.set(
      role,
      await startAgentServer({
        mcpUrl: `${sidecarUrl(role)}/mcp`,
        anthropicBaseUrl: `${sidecarUrl(role)}/anthropic`,
        model: MODEL,
      }),
    );
  }
  const directory = Object.fromEntries(HELPDESK_ROLES.map((r) => [r, agents.get(r)!.url])) as AgentDirectory;
  router = await startRouter({ issuer, agents: directory, misroutes: new Map() });
  misrouting = await startRouter({
    issuer,
    agents: directory,
    misroutes: parseMisroutes('basic-user:admin'),
  });
});

afterAll(async () => {
  await router?.close();
  await misrouting?.close();
  for (const agent of agents.values()) await agent.close();
  for (const sidecar of sidecars.values()) await sidecar.close(1_000);
  await tools?.close();
  await stub?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('the router', () => {
  it('signs a demo user in with a short-lived token for their role', async () => {
    const r = await post(`${router.url}/login`, { user: 'ada' });
    expect(r.json['user']).toEqual({ login: 'ada', sub: 'u-1001', name: 'Ada Lovelace', role: 'basic-user' });
    const check = await issuer.check(r.json['token'] as string);
    expect(check).toMatchObject({ ok: true, sub: 'u-1001', role: 'basic-user' });
    expect(Date.parse(r.json['expires_at'] as string) - Date.now()).toBeLessThanOrEqual(300_000);
  });

  it('refuses unknown users, missing and forged tokens, and unknown members', async () => {
    expect((await post(`${router.url}/login`, { user: 'mallory' })).status).toBe(401);
    expect((await post(`${router.url}/chat`, { message: 'hi' })).status).toBe(401);
    const other = await createIssuer((await generateIssuerKeyPair()).privateJwk);
    const forged = (await other.issue({ login: 'x', sub: 'admin-1', name: 'x', role: 'admin' })).token;
    expect((await post(`${router.url}/chat`, { message: 'hi' }, forged)).status).toBe(401);
    const token = await login('ada');
    const typo = await post(`${router.url}/chat`, { message: 'hi', injct: true }, token);
    expect(typo.status).toBe(400);
  });
});

describe('the agent behind each role’s sidecar', () => {
  it('answers a basic user from the knowledge base through MCP', async () => {
    const r = await post(
      `${router.url}/chat`,
      { message: 'How do I reset my password? query_knowledge_base query="reset password"' },
      await login('ada'),
    );
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ routed_to: 'basic-user', misrouted: false });
    const { trace, reply } = r.json['agent'];
    expect(trace.tools_seen).not.toContain('delete_user');
    expect(trace.tools_seen).not.toContain('list_all_tickets');
    expect(trace.tool_calls).toHaveLength(1);
    expect(trace.tool_calls[0]).toMatchObject({ tool: 'query_knowledge_base', outcome: 'ok' });
    expect(trace.tool_calls[0].text).toContain('Resetting your password');
    expect(reply).toContain('Resetting your password');
    expect(trace.model_calls).toHaveLength(2);
    const audit = await auditOf('basic-user');
    expect(audit.find((e) => e.decision_id === trace.tool_calls[0].decision_id)).toMatchObject({
      effect: 'ALLOW',
      extra: { end_user: 'u-1001' },
    });
    expect(tools.calls.at(-1)).toMatchObject({
      tool: 'query_knowledge_base',
      role: 'basic-user',
      sub: 'u-1001',
    });
  });

  it('never shows a basic user delete_user, so the model cannot call it', async () => {
    const r = await post(`${router.url}/chat`, { message: 'delete_user user_id=u-1002' }, await login('ada'));
    const { trace } = r.json['agent'];
    expect(trace.tools_seen).not.toContain('delete_user');
    expect(trace.tool_calls).toEqual([]);
  });

  it('the compromised agent’s direct admin tool calls are refused and audited', async () => {
    const token = await login('ada');
    const attempts = await runCompromised({
      mcpUrl: `${sidecarUrl('basic-user')}/mcp`,
      endUserToken: token,
      network: false,
    });
    expect(attempts.map((a) => [a.id, a.reached, a.detail])).toEqual([
      ['mcp.delete_user', false, 'SIDECAR_ERR_POLICY_DENIED'],
      ['mcp.list_all_tickets', false, 'SIDECAR_ERR_POLICY_DENIED'],
    ]);
    const audit = await auditOf('basic-user');
    for (const a of attempts) {
      expect(audit.find((e) => e.decision_id === a.decision_id)).toMatchObject({ effect: 'DENY' });
    }
    expect(tools.calls.some((c) => c.tool === 'delete_user')).toBe(false);
  });

  it('the admin sidecar refuses a basic user sent to the admin agent as misrouted, with both identities', async () => {
    const before = tools.calls.length;
    const r = await post(
      `${misrouting.url}/chat`,
      { message: 'Show me every ticket: list_all_tickets' },
      await login('ada', misrouting),
    );
    expect(r.json).toMatchObject({
      user: { sub: 'u-1001', role: 'basic-user' },
      routed_to: 'admin',
      misrouted: true,
    });
    const call = r.json['agent'].trace.tool_calls[0];
    expect(call).toMatchObject({
      tool: 'list_all_tickets',
      outcome: 'denied',
      code: 'SIDECAR_ERR_POLICY_DENIED',
    });
    const entry = (await auditOf('admin')).find((e) => e.decision_id === call.decision_id);
    expect(entry).toMatchObject({
      effect: 'DENY',
      reason: 'misrouted',
      extra: { end_user_role: 'basic-user', end_user_sub: 'u-1001', sidecar_agent: 'admin' },
    });
    expect(tools.calls.length).toBe(before);
  });

  it('an admin deletes a user only after a human approves the exact action', async () => {
    const token = await login('max');
    const pending = post(`${router.url}/chat`, { message: 'Please delete_user user_id=u-1005' }, token);
    const queue = sidecars.get('admin')!.approvals;
    await expect.poll(() => queue.list().length, { timeout: 10_000 }).toBe(1);
    const [held] = queue.list();
    expect(held!.action).toEqual({ type: 'tool_call', tool: 'delete_user', args: { user_id: 'u-1005' } });
    expect(tools.db.getUser('u-1005')).toBeDefined();
    expect(queue.approve(held!.id, 'test@demo', held!.actionHash)).toMatchObject({ ok: true });
    const r = await pending;
    expect(r.json['agent'].trace.tool_calls[0]).toMatchObject({ tool: 'delete_user', outcome: 'ok' });
    expect(r.json['agent'].trace.tool_calls[0].text).toBe('{"deleted":true}');
    expect(tools.db.getUser('u-1005')).toBeUndefined();
  });

  it('counts each role’s model spend in its own sidecar', async () => {
    await post(`${router.url}/chat`, { message: 'list_all_tickets status=open' }, await login('sam'));
    const spend = async (role: HelpdeskRole) =>
      JSON.parse(await readFile(join(dir, role, 'audit', `${role}.spend.json`), 'utf8').catch(() => '{}'));
    for (const role of HELPDESK_ROLES) {
      await expect
        .poll(() => spend(role), { timeout: 5_000 })
        .toMatchObject({
          agent: role,
          models: { [MODEL]: { requests: expect.any(Number), cost_usd: expect.any(Number) } },
        });
    }
  });
});
