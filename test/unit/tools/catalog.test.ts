// One name, one tool: collisions between upstreams refuse startup unless a namespace separates them. A namespace's
// names belong to its upstream (namespace-ownership.test.ts), each upstream has a context audience of its own
// (audience-per-upstream.test.ts), and titles cannot pose as other tools (tool-titles.test.ts).
import { rm } from 'node:fs/promises';
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';
import { isSidecarError, SidecarError } from '../../../sidecar/errors.ts';
import type { Enforcer } from '../../../sidecar/server/enforcer-types.ts';
import { buildCatalog } from '../../../sidecar/tools/catalog.ts';
import { parseMcpConfig } from '../../../sidecar/tools/config.ts';
import { createToolGateway } from '../../../sidecar/tools/gateway.ts';
import {
  connectAgent,
  roleKeyFiles,
  type StartedSidecar,
  startFakeUpstream,
  startGatewaySidecar,
  startHelpdesk,
  tempDir,
} from './support.ts';

const tool = (name: string): Tool => ({ name, inputSchema: { type: 'object' } });
const up = (name: string, namespace?: string) => ({ name, ...(namespace ? { namespace } : {}) });

describe('buildCatalog', () => {
  it.each([
    {
      note: 'same tool on two upstreams',
      lists: [
        { upstream: up('helpdesk'), tools: [tool('get_user_info')] },
        { upstream: up('crm'), tools: [tool('get_user_info')] },
      ],
      error: /"get_user_info": upstreams "helpdesk" and "crm" both offer it; give one of them a `namespace`$/,
    },
    {
      note: 'one upstream listing a name twice',
      lists: [{ upstream: up('a'), tools: [tool('x'), tool('x')] }],
      error: /"x".*"a" lists it twice/,
    },
    {
      note: 'a look-alike name (zero-width space)',
      lists: [{ upstream: up('a'), tools: [tool('delete_user\u200b')] }],
      error: /"a" offers a tool named "delete_user\\u200b"/,
    },
    { note: 'an empty name', lists: [{ upstream: up('a'), tools: [tool('')] }], error: /tool named ""/ },
    {
      note: 'a name with a slash',
      lists: [{ upstream: up('a'), tools: [tool('admin/delete')] }],
      error: /tool named "admin\/delete"/,
    },
  ])('refuses $note', ({ lists, error }) => {
    let thrown: unknown;
    try {
      buildCatalog(lists);
    } catch (err) {
      thrown = err;
    }
    expect(isSidecarError(thrown)).toBe(true);
    expect((thrown as SidecarError).code).toBe('SIDECAR_ERR_CONFIG_INVALID');
    expect((thrown as SidecarError).message).toMatch(error);
  });

  it('a namespace resolves a collision: <namespace>.<tool>, forwarded under the upstream name', () => {
    const catalog = buildCatalog([
      { upstream: up('helpdesk'), tools: [tool('get_user_info'), tool('submit_ticket')] },
      { upstream: up('crm', 'crm'), tools: [tool('get_user_info')] },
    ]);
    expect([...catalog.keys()]).toEqual(['get_user_info', 'submit_ticket', 'crm.get_user_info']);
    expect(catalog.get('crm.get_user_info')).toMatchObject({
      upstreamTool: 'get_user_info',
      upstream: { name: 'crm' },
      definition: { name: 'crm.get_user_info' },
    });
    expect(Object.isFrozen(catalog.get('get_user_info')?.definition)).toBe(true);
  });
});

describe('config', () => {
  const base = {
    upstreams: [{ name: 'h', url: 'http://127.0.0.1:1/mcp' }],
    context: { key_file: '/k.json' },
  };
  it.each([
    { note: 'no upstreams', input: { ...base, upstreams: [] } },
    {
      note: 'duplicate upstream names',
      input: { ...base, upstreams: [base.upstreams[0], base.upstreams[0]] },
    },
    {
      note: 'a shared namespace',
      input: {
        ...base,
        upstreams: [
          { name: 'a', url: 'http://127.0.0.1:1/mcp', namespace: 'n' },
          { name: 'b', url: 'http://127.0.0.1:2/mcp', namespace: 'n' },
        ],
      },
    },
    {
      note: 'a dotted namespace',
      input: { ...base, upstreams: [{ ...base.upstreams[0], namespace: 'a.b' }] },
    },
    {
      note: 'credentials in the URL',
      input: { ...base, upstreams: [{ name: 'h', url: 'http://u:p@h/mcp' }] },
    },
    { note: 'a non-http URL', input: { ...base, upstreams: [{ name: 'h', url: 'file:///etc/passwd' }] } },
    {
      note: 'a header the gateway sets',
      input: { ...base, upstreams: [{ ...base.upstreams[0], headers: { 'X-Agent-Context': 'x' } }] },
    },
    {
      note: 'a header value with a line break',
      input: { ...base, upstreams: [{ ...base.upstreams[0], headers: { authorization: 'a\r\nx-evil: 1' } }] },
    },
    { note: 'an unknown key', input: { ...base, upstreams: [{ ...base.upstreams[0], timeout: 5 }] } },
    { note: 'a TTL over 300 s', input: { ...base, context: { key_file: '/k', ttl_seconds: 3600 } } },
    { note: 'no key file', input: { ...base, context: {} } },
    {
      note: 'an empty upstream audience',
      input: { ...base, upstreams: [{ ...base.upstreams[0], audience: '' }] },
    },
  ])('refuses $note', ({ input }) => {
    expect(() => parseMcpConfig(input)).toThrowError(SidecarError);
  });

  it('accepts a full section', () => {
    expect(
      parseMcpConfig({
        upstreams: [
          { name: 'helpdesk', url: 'http://helpdesk:8081/mcp', headers: { authorization: 'Bearer s' } },
          {
            name: 'crm',
            url: 'https://crm.internal/mcp',
            namespace: 'crm',
            timeout_ms: 5000,
            audience: 'crm-tools',
          },
        ],
        context: { key_file: '/run/keys/admin.private.jwk.json', audience: 'tools', ttl_seconds: 30 },
        max_message_bytes: 2 * 1024 * 1024,
        startup_timeout_ms: 20_000,
      }).upstreams,
    ).toHaveLength(2);
  });
});

describe('createToolGateway at startup', () => {
  let dir: string;
  let keys: Awaited<ReturnType<typeof roleKeyFiles>>;
  let a: HelpdeskToolServer;
  let b: HelpdeskToolServer;

  beforeAll(async () => {
    dir = await tempDir('mcp-catalog');
    keys = await roleKeyFiles(dir);
    a = await startHelpdesk(keys.roleKeys);
    // Its own context audience: b offers the same tool names as a.
    b = await startHelpdesk(keys.roleKeys, { audience: 'helpdesk-b' });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const parts = () => ({
    enforcer: { agent: 'admin' } as unknown as Enforcer,
    policies: { current: { agent: 'admin', digest: 'd', mayExposeTool: () => true } },
    logger: pino({ level: 'silent' }),
  });

  it('refuses to start when two upstreams offer the same tool, naming both', async () => {
    const err = await createToolGateway({
      config: {
        upstreams: [
          { name: 'helpdesk-a', url: a.url },
          { name: 'helpdesk-b', url: b.url, audience: 'helpdesk-b' },
        ],
        context: { key_file: keys.privateFiles.get('admin') as string },
      },
      parts: parts(),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SidecarError);
    expect((err as SidecarError).code).toBe('SIDECAR_ERR_CONFIG_INVALID');
    expect((err as SidecarError).message).toMatch(/"helpdesk-a" and "helpdesk-b" both offer it/);
  });

  it('refuses to start when an upstream does not answer within startup_timeout_ms', async () => {
    const gone = await startFakeUpstream([{ name: 'x', behaviour: 'echo' }]);
    await gone.close();
    const err = await createToolGateway({
      config: {
        upstreams: [{ name: 'gone', url: gone.url }],
        context: { key_file: keys.privateFiles.get('admin') as string },
        startup_timeout_ms: 250,
      },
      parts: parts(),
    }).catch((e: unknown) => e);
    expect((err as SidecarError).code).toBe('SIDECAR_ERR_UPSTREAM_UNREACHABLE');
    expect((err as SidecarError).message).toMatch(/upstream "gone"/);
  });

  it('refuses an unreadable context key', async () => {
    const err = await createToolGateway({
      config: { upstreams: [{ name: 'a', url: a.url }], context: { key_file: `${dir}/missing.json` } },
      parts: parts(),
    }).catch((e: unknown) => e);
    expect((err as SidecarError).code).toBe('SIDECAR_ERR_CONFIG_INVALID');
  });

  it('with a namespace and an audience of its own, both are served and policies name the namespaced tool', async () => {
    let s: StartedSidecar | undefined;
    try {
      s = await startGatewaySidecar({
        policy: {
          text: `version: 1
agent: "admin"
rules:
  - name: "kb-on-b-only"
    action: tool_call
    conditions: { tool: { equals: "b.query_knowledge_base" } }
    effect: ALLOW
`,
        },
        mcp: {
          upstreams: [
            { name: 'helpdesk-a', url: a.url },
            { name: 'helpdesk-b', url: b.url, namespace: 'b', audience: 'helpdesk-b' },
          ],
          context: { key_file: keys.privateFiles.get('admin') as string },
        },
      });
      expect(s.gateway.tools).toContain('b.delete_user');
      expect(s.gateway.tools).toContain('delete_user');
      const agent = await connectAgent(s.url);
      expect((await agent.listTools()).tools.map((t) => t.name)).toEqual(['b.query_knowledge_base']);
      const beforeA = a.calls.length;
      const r = await agent.callTool({ name: 'b.query_knowledge_base', arguments: { query: 'invoice' } });
      expect(r.isError ?? false).toBe(false);
      // Forwarded to b under its own name, and signed for that name and its audience.
      expect(b.calls.at(-1)).toMatchObject({ tool: 'query_knowledge_base', role: 'admin', ok: true });
      expect(a.calls.length).toBe(beforeA);
      await expect(
        agent.callTool({ name: 'query_knowledge_base', arguments: { query: 'x' } }),
      ).rejects.toMatchObject({
        code: -32010,
      });
      await agent.close();
    } finally {
      await s?.close();
    }
  });
});
