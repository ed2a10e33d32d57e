// The production wiring: the gateway mounted by startSidecar from the config file's `mcp` and `identity` sections.
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { HelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';
import { type Sidecar, startSidecar } from '../../../sidecar/server/sidecar.ts';
import {
  connectAgent,
  identityConfig,
  POLICY_DIR,
  rawPost,
  roleKeyFiles,
  rpc,
  startHelpdesk,
  startIdp,
  tempDir,
} from './support.ts';

let dir: string;
let helpdesk: HelpdeskToolServer;
let idp: Awaited<ReturnType<typeof startIdp>>;
let sidecar: Sidecar;
let url: string;

beforeAll(async () => {
  dir = await tempDir('mcp-wiring');
  const keys = await roleKeyFiles(dir);
  helpdesk = await startHelpdesk(keys.roleKeys);
  idp = await startIdp(dir);
  const policyPath = join(dir, 'admin.yaml');
  await writeFile(policyPath, await readFile(join(POLICY_DIR, 'admin.yaml'), 'utf8'));
  sidecar = await startSidecar(
    {
      policyPath,
      listen: { host: '127.0.0.1', port: 0 },
      auditDir: join(dir, 'audit'),
      watchPolicy: false,
      gateways: {
        mcp: {
          upstreams: [{ name: 'helpdesk', url: helpdesk.url }],
          context: { key_file: keys.privateFiles.get('admin') as string },
        },
        identity: identityConfig(idp.jwksFile),
      },
    },
    pino({ level: 'silent' }),
  );
  url = `http://127.0.0.1:${sidecar.agentAddress.port}/mcp`;
});

afterAll(async () => {
  await sidecar?.close(1_000);
  await helpdesk?.close();
  await rm(dir, { recursive: true, force: true });
});

it('serves /mcp from the config file sections: list, call, misrouted token', async () => {
  const agent = await connectAgent(url, await idp.issue({ sub: 'admin-1', role: 'admin' }));
  expect((await agent.listTools()).tools).toHaveLength(5);
  const r = await agent.callTool({ name: 'list_all_tickets', arguments: { status: 'open' } });
  expect(r.isError ?? false).toBe(false);
  expect(helpdesk.calls.at(-1)).toMatchObject({
    tool: 'list_all_tickets',
    role: 'admin',
    sub: 'admin-1',
    ok: true,
  });
  await agent.close();

  const before = helpdesk.calls.length;
  const misrouted = await rawPost(url, rpc('tools/call', { name: 'list_all_tickets', arguments: {} }), {
    authorization: `Bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' })}`,
  });
  expect(misrouted.json).toMatchObject({
    error: { code: -32010, data: { code: 'SIDECAR_ERR_POLICY_DENIED' } },
  });
  expect(helpdesk.calls.length).toBe(before);
});
