// One context audience, one upstream: the config (and so the sidecar) is refused when two upstreams would get
// context tokens for the same audience, explicit or default, whatever tools they list.
//
// Why: tool impersonation by token replay. A context token names only its audience and the upstream's own tool name.
// The catalog is fixed at startup, and an upstream can serve tools it never listed (or ship them after startup), so
// comparing tool lists proves nothing: two upstreams with no tool in common at startup, both on the default
// audience, and the token of an allowed `crm.delete_user` call could be replayed by the crm side to the other
// upstream's `delete_user` once it has one. Distinct audiences, each verified by its own tool server, are what stop
// the replay (context-audience.test.ts); the sidecar does not invent audiences the tool servers do not know.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONTEXT_AUDIENCE } from '../../../sidecar/identity/context-token.ts';
import { type McpConfigInput, parseMcpConfig } from '../../../sidecar/tools/config.ts';
import {
  CRM_DELETE_POLICY,
  configRefusal,
  type FakeUpstream,
  roleKeyFiles,
  startFakeUpstream,
  startRefusal,
  tempDir,
} from './support.ts';

const url = (port: number) => `http://127.0.0.1:${port}/mcp`;
const config = (
  upstreams: McpConfigInput['upstreams'],
  context: Partial<McpConfigInput['context']> = {},
): McpConfigInput => ({ upstreams, context: { key_file: '/k.json', ...context } });

describe('config: no two upstreams share a context audience', () => {
  it.each([
    {
      note: 'both on the default audience',
      cfg: config([
        { name: 'crm', url: url(1), namespace: 'crm' },
        { name: 'notes', url: url(2), namespace: 'notes' },
      ]),
      audience: DEFAULT_CONTEXT_AUDIENCE,
    },
    {
      note: 'both on the configured context.audience',
      cfg: config(
        [
          { name: 'crm', url: url(1) },
          { name: 'notes', url: url(2) },
        ],
        { audience: 'tools' },
      ),
      audience: 'tools',
    },
    {
      note: 'an upstream audience equal to context.audience',
      cfg: config(
        [
          { name: 'crm', url: url(1), namespace: 'crm' },
          { name: 'notes', url: url(2), audience: 'tools' },
        ],
        { audience: 'tools' },
      ),
      audience: 'tools',
    },
    {
      note: 'an upstream audience equal to the default one',
      cfg: config([
        { name: 'crm', url: url(1), audience: DEFAULT_CONTEXT_AUDIENCE },
        { name: 'notes', url: url(2), namespace: 'notes' },
      ]),
      audience: DEFAULT_CONTEXT_AUDIENCE,
    },
    {
      note: 'the same upstream audience on both',
      cfg: config([
        { name: 'crm', url: url(1), namespace: 'crm', audience: 'shared' },
        { name: 'notes', url: url(2), namespace: 'notes', audience: 'shared' },
      ]),
      audience: 'shared',
    },
    {
      note: 'a third upstream on the audience of the first',
      cfg: config([
        { name: 'crm', url: url(1), audience: 'crm-tools' },
        { name: 'helpdesk', url: url(2) },
        { name: 'notes', url: url(3), namespace: 'notes', audience: 'crm-tools' },
      ]),
      audience: 'crm-tools',
    },
  ])('refuses $note', ({ cfg, audience }) => {
    const e = configRefusal(() => parseMcpConfig(cfg));
    // One line: both upstreams, the audience, and what to do about it.
    expect(e.message).toMatch(/^mcp\.upstreams\.\d\.audience: upstreams "crm" and "notes"/);
    expect(e.message).toContain(`for audience "${audience}"`);
    expect(e.message).toContain('set a distinct `audience` on each upstream');
  });

  it.each([
    { note: 'one upstream on the default audience', cfg: config([{ name: 'helpdesk', url: url(1) }]) },
    {
      note: 'one upstream on the default audience and one with its own',
      cfg: config([
        { name: 'helpdesk', url: url(1) },
        { name: 'crm', url: url(2), namespace: 'crm', audience: 'crm-tools' },
      ]),
    },
    {
      note: 'an audience of its own on each',
      cfg: config(
        [
          { name: 'helpdesk', url: url(1), audience: 'helpdesk-tools' },
          { name: 'crm', url: url(2), namespace: 'crm', audience: 'crm-tools' },
        ],
        { audience: 'crm-tools' },
      ),
    },
  ])('accepts $note', ({ cfg }) => {
    expect(parseMcpConfig(cfg).upstreams).toHaveLength(cfg.upstreams.length);
  });
});

describe('startup: upstreams with no tool in common still may not share an audience', () => {
  let dir: string;
  let crm: FakeUpstream;
  let notes: FakeUpstream;

  beforeAll(async () => {
    dir = await tempDir('tools-audience-shared');
    crm = await startFakeUpstream([{ name: 'delete_user', behaviour: 'echo' }]);
    // No tool shared with the crm today; a later deploy may add delete_user, and the sidecar would not notice.
    notes = await startFakeUpstream([{ name: 'query_knowledge_base', behaviour: 'echo' }]);
  });

  afterAll(async () => {
    await crm?.close();
    await notes?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('the sidecar refuses to start, before contacting any upstream', async () => {
    const keys = await roleKeyFiles(dir);
    const err = await startRefusal({
      policy: {
        text: CRM_DELETE_POLICY,
      },
      mcp: {
        // The documented default: no `audience` anywhere.
        upstreams: [
          { name: 'crm', url: crm.url, namespace: 'crm' },
          { name: 'notes', url: notes.url, namespace: 'notes' },
        ],
        context: { key_file: keys.privateFiles.get('admin') as string },
      },
    });
    expect(err.message).toMatch(
      /upstreams "crm" and "notes" would both get context tokens for audience "agent-sidecar-tools"/,
    );
    expect([...crm.received, ...notes.received]).toEqual([]);
  });
});
