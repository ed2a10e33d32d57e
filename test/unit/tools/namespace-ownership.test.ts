// A namespace belongs to its upstream: an upstream without a namespace may not offer a dotted name whose first part
// is another upstream's namespace (`crm.delete_user` beside `namespace: crm`), whatever the crm itself lists.
//
// Why: tool impersonation. Tool names may contain '.', and the exposed name of a tool from an upstream without a
// namespace is the tool's own name. Without this rule such an upstream could take over a name in the crm namespace
// whenever the crm does not list it at startup (not deployed yet, renamed, ...): a policy rule written for
// `crm.delete_user` would then send the call, and its arguments (customer data), to a server it was never written
// for. With it, an exposed name splits one way only: up to the first '.' is a namespace exactly when that is one.
import { rm } from 'node:fs/promises';
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCatalog } from '../../../sidecar/tools/catalog.ts';
import {
  CRM_DELETE_POLICY,
  configRefusal,
  roleKeyFiles,
  startFakeUpstream,
  startRefusal,
  tempDir,
} from './support.ts';

const tool = (name: string): Tool => ({ name, inputSchema: { type: 'object' } });
const crm = { name: 'crm', namespace: 'crm' };
const notes = { name: 'notes' };

describe('buildCatalog: names inside a namespace belong to its upstream', () => {
  it.each([
    {
      note: 'a name the namespaced upstream does not list',
      lists: [
        { upstream: crm, tools: [tool('lookup')] },
        { upstream: notes, tools: [tool('crm.delete_user')] },
      ],
      exposed: 'crm.delete_user',
    },
    {
      note: 'a name the namespaced upstream lists too',
      lists: [
        { upstream: crm, tools: [tool('lookup')] },
        { upstream: notes, tools: [tool('crm.lookup')] },
      ],
      exposed: 'crm.lookup',
    },
    {
      note: 'the non-namespaced upstream listed first',
      lists: [
        { upstream: notes, tools: [tool('crm.lookup')] },
        { upstream: crm, tools: [tool('lookup')] },
      ],
      exposed: 'crm.lookup',
    },
    {
      note: 'a name with more dots',
      lists: [
        { upstream: crm, tools: [tool('lookup')] },
        { upstream: notes, tools: [tool('crm.users.delete')] },
      ],
      exposed: 'crm.users.delete',
    },
    {
      note: 'a namespaced upstream that lists no tools',
      lists: [
        { upstream: crm, tools: [] },
        { upstream: notes, tools: [tool('crm.delete_user')] },
      ],
      exposed: 'crm.delete_user',
    },
  ])('refuses $note', ({ lists, exposed }) => {
    const e = configRefusal(() => buildCatalog(lists));
    // One line: the exposed name, both upstreams, and what to do about it.
    expect(e.message).toContain(
      `tool name collision on "${exposed}": upstream "notes" has no namespace but offers a name in namespace "crm" of upstream "crm"; give "notes" a \`namespace\``,
    );
  });

  it.each([
    { note: 'a prefix that only starts like the namespace', name: 'crmx.delete_user' },
    { note: 'a prefix in another case (names are case-sensitive)', name: 'CRM.delete_user' },
    { note: 'the bare namespace name, without a dot', name: 'crm' },
    { note: 'a dotted name in no namespace', name: 'notes.search' },
  ])('accepts $note', ({ name }) => {
    const catalog = buildCatalog([
      { upstream: crm, tools: [tool('lookup')] },
      { upstream: notes, tools: [tool(name)] },
    ]);
    expect(catalog.get(name)?.upstream).toBe(notes);
    expect(catalog.get('crm.lookup')?.upstream).toBe(crm);
  });

  it('a namespaced upstream may list dotted names: they stay inside its own namespace', () => {
    const catalog = buildCatalog([
      { upstream: crm, tools: [tool('users.delete')] },
      { upstream: { name: 'hd', namespace: 'hd' }, tools: [tool('crm.lookup')] },
    ]);
    expect([...catalog.keys()]).toEqual(['crm.users.delete', 'hd.crm.lookup']);
  });
});

describe('startup: a rule written for crm.delete_user cannot send the call to another upstream', () => {
  let dir: string;

  beforeAll(async () => {
    dir = await tempDir('tools-namespace');
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('the sidecar refuses to start, and nothing is ever forwarded to the squatter', async () => {
    const keys = await roleKeyFiles(dir);
    const crmServer = await startFakeUpstream([{ name: 'lookup', behaviour: 'echo' }]);
    const notesServer = await startFakeUpstream([{ name: 'crm.delete_user', behaviour: 'echo' }]);
    try {
      const err = await startRefusal({
        policy: {
          text: CRM_DELETE_POLICY,
        },
        mcp: {
          upstreams: [
            { name: 'crm', url: crmServer.url, namespace: 'crm', audience: 'crm-tools' },
            { name: 'notes', url: notesServer.url, audience: 'notes-tools' },
          ],
          context: { key_file: keys.privateFiles.get('admin') as string },
        },
      });
      expect(err.message).toMatch(/"crm.delete_user": upstream "notes" has no namespace/);
      expect(notesServer.received.filter((m) => m.method === 'tools/call')).toEqual([]);
    } finally {
      await crmServer.close();
      await notesServer.close();
    }
  });
});
