// Every entry and checkpoint of a chain names one agent. The writer refuses to continue a file that holds another
// agent's entries or checkpoints (SIDECAR_ERR_AUDIT_CHAIN_BROKEN) and refuses to append another agent's record;
// verification reports the first entry or checkpoint of another agent as `modified`, expecting the agent the file
// name `<agent>.audit.jsonl` implies (or the one given, or else the first entry's).
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditChain } from '../../../sidecar/audit/chain.ts';
import type { AuditEntry, Checkpoint } from '../../../sidecar/audit/entry.ts';
import { sealEntry } from '../../../sidecar/audit/entry.ts';
import { verifyAuditFile, verifyAuditText } from '../../../sidecar/audit/verify.ts';
import { record } from './records.ts';

interface Written {
  readonly dir: string;
  readonly path: string;
  readonly lines: string[];
  readonly checkpoints: string;
}

let root: string;

async function writeChain(agent: string, n: number): Promise<Written> {
  const dir = await mkdtemp(join(root, `${agent}-`));
  const chain = await AuditChain.open({
    dir,
    agent,
    sync: 'never',
    checkpointEvery: 1_000_000,
    instance: { hostname: 'h', pid: 1 },
  });
  for (let i = 1; i <= n; i++) await chain.append(record(agent, i));
  await chain.close();
  const lines = (await readFile(chain.path, 'utf8')).split('\n').slice(0, -1);
  return { dir, path: chain.path, lines, checkpoints: await readFile(chain.checkpointsPath, 'utf8') };
}

/** A correctly chained entry of `agent` after `last`: what a writer that ignored the agent would append. */
function continueWith(agent: string, last: string): string {
  const prev = JSON.parse(last) as AuditEntry;
  return sealEntry({
    seq: prev.seq + 1,
    ts: '2026-01-01T00:00:00.000Z',
    ...record(agent, prev.seq + 1),
    instance: { hostname: 'h', pid: 2 },
    prev: prev.hash,
  }).line;
}

const text = (ls: readonly string[]) => `${ls.join('\n')}\n`;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'audit-foreign-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('AuditChain and another agent', () => {
  it("refuses to open another agent's chain placed under its own file name, and leaves it as it was", async () => {
    const bob = await writeChain('bob', 5);
    const dir = await mkdtemp(join(root, 'alice-'));
    const path = join(dir, 'alice.audit.jsonl');
    await writeFile(path, text(bob.lines));
    const opening = AuditChain.open({ dir, agent: 'alice', sync: 'never' });
    await expect(opening).rejects.toMatchObject({ code: 'SIDECAR_ERR_AUDIT_CHAIN_BROKEN' });
    const message = await opening.catch((err: Error) => err.message);
    expect(message).toMatch(/alice\.audit\.jsonl:1: modified: .*"bob".*"alice"/);
    expect(message).not.toContain('\n');
    expect(await readFile(path, 'utf8')).toBe(text(bob.lines));
  });

  it('refuses to open a chain whose later entries are another agent’s', async () => {
    const alice = await writeChain('alice', 3);
    await writeFile(alice.path, text([...alice.lines, continueWith('bob', alice.lines[2]!)]));
    await writeFile(join(alice.dir, 'alice.audit.checkpoints.jsonl'), '');
    await expect(AuditChain.open({ dir: alice.dir, agent: 'alice', sync: 'never' })).rejects.toMatchObject({
      code: 'SIDECAR_ERR_AUDIT_CHAIN_BROKEN',
      message: expect.stringMatching(/:4: modified: /),
    });
  });

  it("refuses to open a chain whose checkpoints file holds another agent's checkpoint", async () => {
    const alice = await writeChain('alice', 3);
    const cp = JSON.parse(alice.checkpoints.trim()) as Checkpoint;
    await writeFile(
      join(alice.dir, 'alice.audit.checkpoints.jsonl'),
      `${JSON.stringify({ ...cp, agent: 'bob' })}\n`,
    );
    await expect(AuditChain.open({ dir: alice.dir, agent: 'alice', sync: 'never' })).rejects.toMatchObject({
      code: 'SIDECAR_ERR_AUDIT_CHAIN_BROKEN',
      message: expect.stringMatching(/:3: modified: the checkpoint .*"bob"/),
    });
  });

  it("rejects appending another agent's record and stays usable", async () => {
    const dir = await mkdtemp(join(root, 'append-'));
    const chain = await AuditChain.open({ dir, agent: 'alice', sync: 'never' });
    await chain.append(record('alice', 1));
    await expect(chain.append(record('bob', 2))).rejects.toMatchObject({
      code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED',
    });
    expect(chain.failed).toBe(false);
    expect((await chain.append(record('alice', 2))).seq).toBe(2);
    await chain.close();
    const agents = (await readFile(chain.path, 'utf8'))
      .trim()
      .split('\n')
      .map((l) => (JSON.parse(l) as { agent: string }).agent);
    expect(agents).toEqual(['alice', 'alice']);
    expect(await verifyAuditFile(chain.path)).toMatchObject({ ok: true, count: 2 });
  });
});

describe('verify and another agent', () => {
  it('reports the first entry of another agent in a correctly linked chain as modified', async () => {
    const bob = await writeChain('bob', 3);
    const mixed = [...bob.lines, continueWith('alice', bob.lines[2]!)];
    expect(verifyAuditText(text(mixed))).toMatchObject({ ok: false, line: 4, kind: 'modified' });
    expect(verifyAuditText(text(mixed), [], 'alice')).toMatchObject({ ok: false, line: 1, kind: 'modified' });
  });

  it('expects the agent the file name implies, or the one given, or else the first entry’s', async () => {
    const bob = await writeChain('bob', 3);
    const dir = await mkdtemp(join(root, 'named-'));
    const named = join(dir, 'alice.audit.jsonl');
    const other = join(dir, 'copy.jsonl');
    await writeFile(named, text(bob.lines));
    await writeFile(other, text(bob.lines));
    expect(await verifyAuditFile(named)).toMatchObject({ ok: false, line: 1, kind: 'modified' });
    expect(await verifyAuditFile(named, { agent: 'bob' })).toMatchObject({ ok: true, count: 3 });
    expect(await verifyAuditFile(other)).toMatchObject({ ok: true, count: 3 });
    expect(await verifyAuditFile(other, { agent: 'alice' })).toMatchObject({
      ok: false,
      line: 1,
      kind: 'modified',
    });
  });

  it("refuses a checkpoint of another agent, even one that carries the chain's head", async () => {
    const alice = await writeChain('alice', 4);
    const cp = JSON.parse(alice.checkpoints.trim()) as Checkpoint;
    expect(cp).toMatchObject({ agent: 'alice', count: 4 });
    expect(verifyAuditText(text(alice.lines), [cp])).toMatchObject({ ok: true, count: 4 });
    const foreign = { ...cp, agent: 'bob' };
    expect(verifyAuditText(text(alice.lines), [foreign])).toMatchObject({
      ok: false,
      line: 4,
      kind: 'modified',
    });
    // One past the end when the checkpoint claims more entries than the file has.
    const beyond = { ...foreign, count: 9 };
    expect(verifyAuditText(text(alice.lines), [cp, beyond])).toMatchObject({
      ok: false,
      line: 5,
      kind: 'modified',
    });
    await writeFile(join(alice.dir, 'alice.audit.checkpoints.jsonl'), `${JSON.stringify(foreign)}\n`);
    expect(await verifyAuditFile(alice.path)).toMatchObject({ ok: false, line: 4, kind: 'modified' });
  });
});
