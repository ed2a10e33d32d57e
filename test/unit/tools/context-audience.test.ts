// Context tokens are bound to the upstream they are minted for. Each upstream's tokens carry its own `audience`
// (default: the sidecar-wide `context.audience`), and a tool server verifies with its own, so a token the sidecar
// sent with an allowed call to one upstream is refused when replayed to another upstream offering a tool of the same
// name (one the policy hides). Startup refuses two upstreams that would share an audience, whatever their tool lists
// (audience-per-upstream.test.ts).
import { rm } from 'node:fs/promises';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';
import { CONTEXT_HEADER } from '../../../sidecar/identity/context-token.ts';
import {
  CRM_DELETE_POLICY,
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
const POLICY = `${CRM_DELETE_POLICY}  - name: "hd-kb"
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
