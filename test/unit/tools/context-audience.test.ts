// Context tokens are bound to the upstream they are minted for. Each upstream's tokens carry its own `audience`
// (default: the sidecar-wide `context.audience`), and a tool server verifies with its own audience, so a token the
// sidecar sent with an allowed call to one upstream is refused when replayed to another upstream offering a tool of
// the same name (one the policy hides). A token names only the audience and the upstream's own tool name, so
// startup refuses two upstreams that share an audience and offer the same tool name, namespaced or not; upstreams
// that share an audience but no tool name start as before.
import { rm } from 'node:fs/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { decodeJwt } from 'jose';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';
import { SidecarError } from '../../../sidecar/errors.ts';
import { CONTEXT_HEADER, DEFAULT_CONTEXT_AUDIENCE } from '../../../sidecar/identity/context-token.ts';
import type { Enforcer } from '../../../sidecar/server/enforcer-types.ts';
import type { McpConfigInput } from '../../../sidecar/tools/config.ts';
import { createToolGateway } from '../../../sidecar/tools/gateway.ts';
import {
  type FakeUpstream,
  rawPost,
  roleKeyFiles,
  rpc,
  type StartedSidecar,
  startFakeUpstream,
  startGatewaySidecar,
  startHelpdesk,
  tempDir,
} from './support.ts';

// The admin may delete users in the (third-party) crm, and search the helpdesk's knowledge base; the helpdesk's
// delete_user is not in its policy.
const POLICY = `version: 1
agent: "admin"
rules:
  - name: "crm-delete"
    action: tool_call
    conditions: { tool: { equals: "crm.delete_user" } }
    effect: ALLOW
  - name: "hd-kb"
    action: tool_call
    conditions: { tool: { equals: "hd.query_knowledge_base" } }
    effect: ALLOW
`;

let dir: string;
let keys: Awaited<ReturnType<typeof roleKeyFiles>>;

beforeAll(async () => {
  dir = await tempDir('tools-audience');
  keys = await roleKeyFiles(dir);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('distinct audiences: a token minted for one upstream is refused by another', () => {
  let crm: FakeUpstream;
  let helpdesk: HelpdeskToolServer;
  let s: StartedSidecar;

  beforeAll(async () => {
    helpdesk = await startHelpdesk(keys.roleKeys, { audience: 'helpdesk-tools' });
    crm = await startFakeUpstream([{ name: 'delete_user', behaviour: 'echo' }]);
    s = await startGatewaySidecar({
      policy: { text: POLICY },
      mcp: {
        upstreams: [
          // No audience of its own: the sidecar-wide one.
          { name: 'crm', url: crm.url, namespace: 'crm' },
          { name: 'helpdesk', url: helpdesk.url, namespace: 'hd', audience: 'helpdesk-tools' },
        ],
        context: { key_file: keys.privateFiles.get('admin') as string, audience: 'crm-tools' },
      },
    });
  });

  afterAll(async () => {
    await s?.close();
    await crm?.close();
    await helpdesk?.close();
  });

  it('the helpdesk accepts the tokens minted for it, verifying with its own audience', async () => {
    const r = await rawPost(
      s.url,
      rpc('tools/call', { name: 'hd.query_knowledge_base', arguments: { query: 'invoice' } }),
    );
    expect(r.json).toMatchObject({ result: {} });
    expect(helpdesk.calls.at(-1)).toMatchObject({ tool: 'query_knowledge_base', role: 'admin', ok: true });
  });

  it('a token forwarded to the crm cannot run the same-named tool at the helpdesk', async () => {
    const args = { user_id: 'u-1002' };
    // The policy hides and denies hd.delete_user.
    const denied = await rawPost(s.url, rpc('tools/call', { name: 'hd.delete_user', arguments: args }));
    expect(denied.json).toMatchObject({ error: { data: { code: 'SIDECAR_ERR_POLICY_DENIED' } } });
    expect(helpdesk.db.getUser('u-1002')).toBeDefined();

    // The allowed crm call: the crm server receives a context token for its own audience.
    const ok = await rawPost(s.url, rpc('tools/call', { name: 'crm.delete_user', arguments: args }));
    expect(ok.json).toMatchObject({ result: {} });
    const sent = crm.received.filter((m) => m.method === 'tools/call').at(-1);
    const token = sent?.headers[CONTEXT_HEADER] as string;
    expect(typeof token).toBe('string');
    expect(decodeJwt(token)).toMatchObject({ aud: 'crm-tools', tool: 'delete_user', role: 'admin' });

    // The crm server (or anyone on its path) replays that token to the helpdesk.
    const client = new Client({ name: 'replayer', version: '0' });
    await client.connect(
      new StreamableHTTPClientTransport(new URL(helpdesk.url), {
        requestInit: { headers: { [CONTEXT_HEADER]: token } },
      }),
    );
    const replayed = await client.callTool({ name: 'delete_user', arguments: args });
    await client.close();

    expect(replayed.isError).toBe(true);
    expect(helpdesk.calls.at(-1)).toMatchObject({ tool: 'delete_user', ok: false, reason: 'wrong_audience' });
    expect(helpdesk.db.getUser('u-1002')).toBeDefined();
  });
});

describe('startup: upstreams sharing an audience', () => {
  let a: FakeUpstream;
  let b: FakeUpstream;
  let other: FakeUpstream;

  beforeAll(async () => {
    a = await startFakeUpstream([
      { name: 'delete_user', behaviour: 'echo' },
      { name: 'lookup', behaviour: 'echo' },
    ]);
    b = await startFakeUpstream([{ name: 'delete_user', behaviour: 'echo' }]);
    other = await startFakeUpstream([{ name: 'submit_ticket', behaviour: 'echo' }]);
  });

  afterAll(async () => {
    await a?.close();
    await b?.close();
    await other?.close();
  });

  const parts = () => ({
    enforcer: { agent: 'admin' } as unknown as Enforcer,
    policies: { current: { agent: 'admin', digest: 'd', mayExposeTool: () => true } },
    logger: pino({ level: 'silent' }),
  });
  const config = (
    upstreams: McpConfigInput['upstreams'],
    context: Partial<McpConfigInput['context']> = {},
  ): McpConfigInput => ({
    upstreams,
    context: { key_file: keys.privateFiles.get('admin') as string, ...context },
  });

  it.each([
    {
      note: 'namespaced, both on the default audience',
      upstreams: () => [
        { name: 'crm', url: a.url, namespace: 'crm' },
        { name: 'helpdesk', url: b.url, namespace: 'hd' },
      ],
      context: {},
      audience: DEFAULT_CONTEXT_AUDIENCE,
    },
    {
      note: 'namespaced, both on the same configured context.audience',
      upstreams: () => [
        { name: 'crm', url: a.url, namespace: 'crm' },
        { name: 'helpdesk', url: b.url, namespace: 'hd' },
      ],
      context: { audience: 'tools' },
      audience: 'tools',
    },
    {
      note: 'one upstream audience equal to the sidecar-wide one',
      upstreams: () => [
        { name: 'crm', url: a.url, namespace: 'crm' },
        { name: 'helpdesk', url: b.url, namespace: 'hd', audience: 'tools' },
      ],
      context: { audience: 'tools' },
      audience: 'tools',
    },
    {
      note: 'the same upstream audience on both',
      upstreams: () => [
        { name: 'crm', url: a.url, namespace: 'crm', audience: 'shared' },
        { name: 'helpdesk', url: b.url, namespace: 'hd', audience: 'shared' },
      ],
      context: {},
      audience: 'shared',
    },
  ])('refuses to start when both offer a tool of the same name: $note', async (c) => {
    const err = await createToolGateway({ config: config(c.upstreams(), c.context), parts: parts() }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SidecarError);
    const e = err as SidecarError;
    expect(e.code).toBe('SIDECAR_ERR_CONFIG_INVALID');
    // One line, naming both upstreams, the tool and the audience, and what to do about it.
    expect(e.message).not.toMatch(/\n/);
    expect(e.message).toMatch(/tool "delete_user"/);
    expect(e.message).toMatch(/upstreams "crm" and "helpdesk"/);
    expect(e.message).toContain(`audience "${c.audience}"`);
    expect(e.message).toMatch(/give each upstream its own `audience`/);
  });

  it('the whole sidecar refuses to start on such a config', async () => {
    const err = await startGatewaySidecar({
      policy: { text: POLICY },
      mcp: config([
        { name: 'crm', url: a.url, namespace: 'crm' },
        { name: 'helpdesk', url: b.url, namespace: 'hd' },
      ]),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SidecarError);
    expect((err as SidecarError).code).toBe('SIDECAR_ERR_CONFIG_INVALID');
    expect((err as SidecarError).message).toMatch(/"crm" and "helpdesk".*`audience`/);
  });

  it('without namespaces, the name collision says an audience apiece is needed too', async () => {
    const err = await createToolGateway({
      config: config([
        { name: 'crm', url: a.url },
        { name: 'helpdesk', url: b.url },
      ]),
      parts: parts(),
    }).catch((e: unknown) => e);
    expect((err as SidecarError).code).toBe('SIDECAR_ERR_CONFIG_INVALID');
    expect((err as SidecarError).message).toMatch(
      /"delete_user": upstreams "crm" and "helpdesk" both offer it; give one of them a `namespace` and each its own `audience`/,
    );
  });

  it.each([
    {
      note: 'the same audience and no tool name in common',
      upstreams: () => [
        { name: 'crm', url: a.url },
        { name: 'helpdesk', url: other.url },
      ],
      tools: ['delete_user', 'lookup', 'submit_ticket'],
    },
    {
      note: 'the same tool name under distinct audiences',
      upstreams: () => [
        { name: 'crm', url: a.url, namespace: 'crm' },
        { name: 'helpdesk', url: b.url, namespace: 'hd', audience: 'helpdesk-tools' },
      ],
      tools: ['crm.delete_user', 'crm.lookup', 'hd.delete_user'],
    },
  ])('starts with $note', async (c) => {
    const gateway = await createToolGateway({ config: config(c.upstreams()), parts: parts() });
    try {
      expect([...gateway.tools].sort()).toEqual(c.tools);
    } finally {
      await gateway.close();
    }
  });
});
