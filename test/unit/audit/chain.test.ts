import { appendFile, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditChainOptions, AuditIo, RecoveryInfo } from '../../../sidecar/audit/chain.ts';
import { AuditChain, nodeAuditIo } from '../../../sidecar/audit/chain.ts';
import type { AuditEntry, AuditRecord, Checkpoint } from '../../../sidecar/audit/entry.ts';
import { GENESIS_HASH, hashEntry, parseCheckpoint } from '../../../sidecar/audit/entry.ts';
import { verifyAuditFile } from '../../../sidecar/audit/verify.ts';
import { canonicalJson } from '../../../sidecar/policy/canonical.ts';

let root: string;
let dirs = 0;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'audit-chain-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function freshDir(): string {
  return join(root, `d${++dirs}`);
}

function record(i: number, overrides: Partial<AuditRecord> = {}): AuditRecord {
  return {
    decision_id: `d-${i}`,
    agent: 'research',
    kind: 'tool',
    action: { type: 'tool_call', tool: 'search', args: { q: `query ${i}` } },
    effect: 'ALLOW',
    rule: 'search-allowed',
    reason: 'matched',
    policy_digest: 'c'.repeat(64),
    ...overrides,
  };
}

function clock(): () => Date {
  let tick = 0;
  return () => new Date(Date.UTC(2026, 0, 1) + tick++ * 1000);
}

async function openChain(dir: string, opts: Partial<AuditChainOptions> = {}): Promise<AuditChain> {
  return AuditChain.open({
    dir,
    agent: 'research',
    now: clock(),
    instance: { hostname: 'test', pid: 7 },
    sync: 'always',
    ...opts,
  });
}

async function lines(path: string): Promise<AuditEntry[]> {
  const text = await readFile(path, 'utf8');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as AuditEntry);
}

async function checkpointLines(path: string): Promise<Checkpoint[]> {
  const text = await readFile(path, 'utf8');
  return text
    .split('\n')
    .map((l) => parseCheckpoint(l))
    .filter((cp) => cp !== undefined);
}

interface Gate {
  readonly entered: Promise<void>;
  open(): void;
  wait(): Promise<void>;
}

function gate(): Gate {
  let enter!: () => void;
  let release!: () => void;
  const entered = new Promise<void>((r) => (enter = r));
  const released = new Promise<void>((r) => (release = r));
  return {
    entered,
    open: () => release(),
    wait: () => {
      enter();
      return released;
    },
  };
}

/** A real io that counts calls and can be made to fail. */
function faultyIo() {
  const state = {
    writes: [] as number[],
    syncs: 0,
    failWrite: false,
    partialWrite: false,
    failSync: false,
    failTruncate: false,
  };
  const io: AuditIo = {
    async write(file, data) {
      state.writes.push(data.toString('utf8').split('\n').length - 1);
      if (state.failWrite) {
        if (state.partialWrite) await nodeAuditIo.write(file, data.subarray(0, Math.floor(data.length / 2)));
        throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' });
      }
      await nodeAuditIo.write(file, data);
    },
    async sync(file) {
      state.syncs++;
      if (state.failSync) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' });
      await nodeAuditIo.sync(file);
    },
    async truncate(file, length) {
      if (state.failTruncate) throw Object.assign(new Error('EIO: i/o error, ftruncate'), { code: 'EIO' });
      await nodeAuditIo.truncate(file, length);
    },
  };
  return { io, state };
}

/** `io` whose fdatasync waits for the gate to open. */
function heldSync(io: AuditIo, held: Gate): AuditIo {
  return {
    ...io,
    async sync(file) {
      await held.wait();
      await io.sync(file);
    },
  };
}

describe('AuditChain', () => {
  it('writes entries that chain from genesis and verify', async () => {
    const chain = await openChain(freshDir());
    const first = await chain.append(record(1));
    const second = await chain.append(record(2));
    await chain.close();

    expect(first).toMatchObject({
      seq: 1,
      ts: '2026-01-01T00:00:00.000Z',
      prev: GENESIS_HASH,
      instance: { hostname: 'test', pid: 7 },
      decision_id: 'd-1',
      kind: 'tool',
    });
    expect(first.hash).toBe(hashEntry(first));
    expect(second).toMatchObject({ seq: 2, prev: first.hash });
    expect(await lines(chain.path)).toEqual([first, second]);
    expect(await verifyAuditFile(chain.path)).toEqual({
      ok: true,
      count: 2,
      head: { count: 2, hash: second.hash },
    });
  });

  it('continues the same chain after a restart', async () => {
    const dir = freshDir();
    const a = await openChain(dir);
    for (let i = 1; i <= 3; i++) await a.append(record(i));
    await a.close();

    const b = await openChain(dir);
    expect(b.head).toEqual(a.head);
    const fourth = await b.append(record(4));
    await b.append(record(5));
    await b.close();

    expect(fourth).toMatchObject({ seq: 4, prev: a.head.hash });
    expect((await lines(b.path)).map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(await verifyAuditFile(b.path)).toMatchObject({ ok: true, count: 5 });
  });

  it.each([
    { name: 'unterminated partial line', torn: '{"seq":4,"ts":"2026-01-01T00:00:0' },
    { name: 'terminated garbage line', torn: '\u0000\u0000\u0000\u0000\n' },
  ])('recovers a torn last line on open: $name', async ({ torn }) => {
    const dir = freshDir();
    const a = await openChain(dir);
    for (let i = 1; i <= 3; i++) await a.append(record(i));
    await a.close();
    await appendFile(a.path, torn);

    const reports: RecoveryInfo[] = [];
    const b = await openChain(dir, { onRecovery: (info) => reports.push(info) });
    await b.append(record(5));
    await b.close();

    expect(reports).toHaveLength(1);
    const info = reports[0]!;
    expect(info).toMatchObject({ line: 4, bytes: Buffer.byteLength(torn) });
    expect(await readFile(info.sideFile, 'utf8')).toBe(torn);
    expect(info.sideFile.startsWith(`${a.path}.torn-`)).toBe(true);
    expect(info.entry).toMatchObject({
      seq: 4,
      kind: 'chain_recovery',
      prev: a.head.hash,
      extra: { torn_line: 4, torn_bytes: Buffer.byteLength(torn), torn_sha256: info.sha256 },
    });
    const entries = await lines(b.path);
    expect(entries.map((e) => [e.seq, e.kind])).toEqual([
      [1, 'tool'],
      [2, 'tool'],
      [3, 'tool'],
      [4, 'chain_recovery'],
      [5, 'tool'],
    ]);
    expect(await verifyAuditFile(b.path)).toMatchObject({ ok: true, count: 5 });
  });

  it.each([
    {
      name: 'an edited middle entry',
      damage: (text: string) => {
        const ls = text.split('\n');
        return ls.with(1, ls[1]!.replace('"reason":"matched"', '"reason":"forged"')).join('\n');
      },
      want: /:2: modified: /,
    },
    {
      name: 'a deleted middle entry',
      damage: (text: string) => text.split('\n').toSpliced(1, 1).join('\n'),
      want: /:2: deleted: /,
    },
    {
      name: 'a cut tail the checkpoints remember',
      damage: (text: string) => `${text.split('\n').slice(0, 2).join('\n')}\n`,
      want: /:3: truncated: /,
    },
    {
      name: 'a deleted file the checkpoints remember',
      damage: () => '',
      want: /:1: truncated: /,
    },
  ])('refuses to open over $name', async ({ damage, want }) => {
    const dir = freshDir();
    const a = await openChain(dir);
    for (let i = 1; i <= 4; i++) await a.append(record(i));
    await a.close();
    const damaged = damage(await readFile(a.path, 'utf8'));
    if (damaged === '') await rm(a.path);
    else await writeFile(a.path, damaged);

    const opening = openChain(dir);
    await expect(opening).rejects.toMatchObject({ code: 'SIDECAR_ERR_AUDIT_CHAIN_BROKEN' });
    await expect(opening).rejects.toSatisfy((err: { detail: string }) => want.test(err.detail));
  });

  it('refuses a directory it cannot create', async () => {
    const dir = freshDir();
    await writeFile(`${dir}-file`, 'a regular file');
    await expect(openChain(join(`${dir}-file`, 'audit'))).rejects.toMatchObject({
      code: 'SIDECAR_ERR_AUDIT_DIR_UNWRITABLE',
      detail: expect.stringContaining('ENOTDIR'),
    });
  });

  it('refuses an agent name that is not a safe file name', async () => {
    await expect(AuditChain.open({ dir: freshDir(), agent: '../escape' })).rejects.toMatchObject({
      code: 'SIDECAR_ERR_CONFIG_INVALID',
    });
  });

  it.each([
    { name: 'write fails after writing part of the batch', fault: { failWrite: true, partialWrite: true } },
    { name: 'write fails before writing anything', fault: { failWrite: true } },
    { name: 'fdatasync fails', fault: { failSync: true } },
  ])('rejects the whole batch and recovers when the disk does: $name', async ({ fault }) => {
    const { io, state } = faultyIo();
    const chain = await openChain(freshDir(), { io });
    await chain.append(record(1));
    await chain.append(record(2));
    const headBefore = chain.head;
    const sizeBefore = (await stat(chain.path)).size;

    Object.assign(state, fault);
    const batch = await Promise.allSettled([
      chain.append(record(3)),
      chain.append(record(4)),
      chain.append(record(5)),
    ]);
    expect(batch.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
    for (const r of batch) {
      expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED' });
    }
    expect(chain.head).toEqual(headBefore);
    expect((await stat(chain.path)).size).toBe(sizeBefore);

    Object.assign(state, { failWrite: false, partialWrite: false, failSync: false });
    const next = await chain.append(record(6));
    await chain.close();
    expect(next).toMatchObject({ seq: 3, prev: headBefore.hash, decision_id: 'd-6' });
    expect(await verifyAuditFile(chain.path)).toMatchObject({ ok: true, count: 3 });
  });

  it('stays failed when it cannot restore the file, and the next open recovers the tail', async () => {
    const { io, state } = faultyIo();
    const dir = freshDir();
    const chain = await openChain(dir, { io });
    await chain.append(record(1));

    Object.assign(state, { failWrite: true, partialWrite: true, failTruncate: true });
    await expect(chain.append(record(2))).rejects.toMatchObject({ code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED' });
    Object.assign(state, { failWrite: false, partialWrite: false, failTruncate: false });
    await expect(chain.append(record(3))).rejects.toMatchObject({ code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED' });
    expect(chain.head.count).toBe(1);
    await chain.close();

    const reports: RecoveryInfo[] = [];
    const reopened = await openChain(dir, { onRecovery: (info) => reports.push(info) });
    await reopened.close();
    expect(reports.map((r) => r.line)).toEqual([2]);
    expect(await verifyAuditFile(chain.path)).toMatchObject({ ok: true, count: 2 });
  });

  it('commits appends issued together in one write and one sync', async () => {
    const { io, state } = faultyIo();
    const chain = await openChain(freshDir(), { io });
    await Promise.all(Array.from({ length: 100 }, (_, i) => chain.append(record(i))));
    expect(state.writes).toEqual([100]);
    expect(state.syncs).toBe(1);
    await chain.close();
  });

  it('queues appends made while a write is in flight into the next batch', async () => {
    const { io, state } = faultyIo();
    const held = gate();
    const chain = await openChain(freshDir(), {
      io: {
        ...io,
        async write(file, data) {
          if (state.writes.length === 0) await held.wait();
          await io.write(file, data);
        },
      },
    });
    const first = chain.append(record(1));
    await held.entered;
    const later = [chain.append(record(2)), chain.append(record(3))];
    held.open();
    expect((await Promise.all([first, ...later])).map((e) => e.seq)).toEqual([1, 2, 3]);
    expect(state.writes).toEqual([1, 2]);
    await chain.close();
  });

  it('resolves only after the batch is synced', async () => {
    const { io } = faultyIo();
    const held = gate();
    const checkpoints: Checkpoint[] = [];
    const chain = await openChain(freshDir(), {
      checkpointEvery: 1,
      onCheckpoint: (cp) => checkpoints.push(cp),
      io: {
        ...io,
        async sync(file) {
          await held.wait();
          await io.sync(file);
        },
      },
    });
    let resolved = false;
    const appended = chain.append(record(1)).then((e) => {
      resolved = true;
      return e;
    });
    await held.entered;
    expect(resolved).toBe(false);
    expect(checkpoints).toEqual([]);
    held.open();
    const entry = await appended;
    expect(checkpoints.map((cp) => [cp.count, cp.head])).toEqual([[1, entry.hash]]);
    await chain.close();
  });

  it('keeps 1,000 concurrent appends in call order with contiguous seq', async () => {
    const chain = await openChain(freshDir(), { sync: 'never' });
    const entries = await Promise.all(Array.from({ length: 1000 }, (_, i) => chain.append(record(i))));
    await chain.close();
    expect(entries.map((e) => e.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1));
    expect(entries.map((e) => e.decision_id)).toEqual(Array.from({ length: 1000 }, (_, i) => `d-${i}`));
    expect(await verifyAuditFile(chain.path)).toMatchObject({ ok: true, count: 1000 });
  });

  it('writes checkpoints every N entries and on close', async () => {
    const reported: Checkpoint[] = [];
    const chain = await openChain(freshDir(), {
      checkpointEvery: 10,
      onCheckpoint: (cp) => reported.push(cp),
    });
    const entries: AuditEntry[] = [];
    for (let i = 1; i <= 25; i++) entries.push(await chain.append(record(i)));
    await chain.close();

    const written = await checkpointLines(chain.checkpointsPath);
    expect(written).toEqual(reported);
    expect(written.map((cp) => [cp.count, cp.head, cp.agent])).toEqual([
      [10, entries[9]!.hash, 'research'],
      [20, entries[19]!.hash, 'research'],
      [25, entries[24]!.hash, 'research'],
    ]);
  });

  it('writes a checkpoint on the interval when there were new entries', async () => {
    let onFirst!: (cp: Checkpoint) => void;
    const first = new Promise<Checkpoint>((r) => (onFirst = r));
    const chain = await openChain(freshDir(), {
      checkpointEvery: 1_000_000,
      checkpointIntervalMs: 5,
      onCheckpoint: (cp) => onFirst(cp),
    });
    const entry = await chain.append(record(1));
    expect(await first).toMatchObject({ count: 1, head: entry.hash });
    await chain.close();
  });

  it('flushes pending appends on close and rejects appends after it', async () => {
    const chain = await openChain(freshDir());
    const pending = [chain.append(record(1)), chain.append(record(2)), chain.append(record(3))];
    await chain.close();
    expect((await Promise.all(pending)).map((e) => e.seq)).toEqual([1, 2, 3]);
    await expect(chain.append(record(4))).rejects.toMatchObject({ code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED' });
    expect(await verifyAuditFile(chain.path)).toMatchObject({ ok: true, count: 3 });
  });

  it('rejects a malformed record without breaking the chain', async () => {
    const chain = await openChain(freshDir());
    await expect(
      chain.append({ ...record(1), decision_id: 42 } as unknown as AuditRecord),
    ).rejects.toMatchObject({
      code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED',
    });
    expect(await chain.append(record(2))).toMatchObject({ seq: 1 });
    await chain.close();
  });

  it('redacts secrets and snapshots the record at append time', async () => {
    const chain = await openChain(freshDir());
    const action = {
      type: 'network' as const,
      url: 'https://bot:s3cr3t@api.example.com/v1?access_token=tok123&page=2',
      method: 'GET',
    };
    const appended = chain.append(
      record(1, { action, extra: { request_headers: { authorization: 'Bearer tok456', accept: 'json' } } }),
    );
    (action as { method: string }).method = 'POST';
    const entry = await appended;
    await chain.close();

    const text = await readFile(chain.path, 'utf8');
    for (const secret of ['s3cr3t', 'tok123', 'tok456']) expect(text).not.toContain(secret);
    expect(entry.action).toMatchObject({ method: 'GET', url: expect.stringContaining('page=2') });
    expect(entry.extra).toEqual({ request_headers: { authorization: '[REDACTED]', accept: 'json' } });
  });

  // Not a timing test: the shape that lets canonicalJson hand the entry to JSON.stringify (members in key order at
  // every level), whatever order the caller built its record in.
  it('builds entries already in canonical member order, whatever order the record came in', async () => {
    const chain = await openChain(freshDir());
    const entry = await chain.append({
      reason: 'matched',
      rule: 'r',
      policy_digest: 'c'.repeat(64),
      kind: 'proxy',
      extra: { z: [{ b: 1, a: 2 }], addresses: ['127.0.0.1'] },
      effect: 'ALLOW',
      decision_id: 'd-1',
      agent: 'research',
      action: { url: 'http://example.com/', type: 'network', method: 'GET' },
    });
    await chain.close();
    const { hash, ...unhashed } = entry;
    expect(JSON.stringify(unhashed)).toBe(canonicalJson(unhashed));
    expect(Object.keys(entry.extra ?? {})).toEqual(['addresses', 'z']);
    expect(hash).toBe(hashEntry(entry));
  });

  it('does not sync when fsync is off, and leaves no probe files behind', async () => {
    const { io, state } = faultyIo();
    const dir = freshDir();
    const chain = await openChain(dir, { io, sync: 'never' });
    await chain.append(record(1));
    await chain.close();
    expect(state.syncs).toBe(0);
    expect((await readdir(dir)).sort()).toEqual(['research.audit.checkpoints.jsonl', 'research.audit.jsonl']);
  });

  describe("sync: 'interval'", () => {
    it('answers once written and fdatasyncs in the background, once for many batches', async () => {
      const { io, state } = faultyIo();
      const held = gate();
      const chain = await openChain(freshDir(), {
        sync: 'interval',
        syncIntervalMs: 200,
        io: heldSync(io, held),
      });
      const first = await chain.append(record(1));
      const second = await chain.append(record(2));
      expect([first.seq, second.seq]).toEqual([1, 2]);
      expect(state.writes).toEqual([1, 1]);
      await held.entered;
      held.open();
      await chain.close();
      expect(state.syncs).toBe(1);
    });

    it('checkpoints only what a sync has covered', async () => {
      const { io } = faultyIo();
      const held = gate();
      const checkpoints: Checkpoint[] = [];
      const chain = await openChain(freshDir(), {
        sync: 'interval',
        syncIntervalMs: 1,
        checkpointEvery: 1,
        onCheckpoint: (cp) => checkpoints.push(cp),
        io: heldSync(io, held),
      });
      const entry = await chain.append(record(1));
      await held.entered;
      expect(checkpoints).toEqual([]);
      held.open();
      await chain.close();
      expect(checkpoints.map((cp) => [cp.count, cp.head])).toEqual([[1, entry.hash]]);
    });

    it('syncs what is still unsynced on close', async () => {
      const { io, state } = faultyIo();
      const dir = freshDir();
      const chain = await openChain(dir, { sync: 'interval', syncIntervalMs: 60_000, io });
      await chain.append(record(1));
      expect(state.syncs).toBe(0);
      await chain.close();
      expect(state.syncs).toBe(1);
      expect(await verifyAuditFile(join(dir, 'research.audit.jsonl'))).toMatchObject({ ok: true, count: 1 });
    });

    it('refuses every later append once a background sync fails (fail closed)', async () => {
      const { io, state } = faultyIo();
      const errors: unknown[] = [];
      const chain = await openChain(freshDir(), {
        sync: 'interval',
        syncIntervalMs: 1,
        io,
        onSyncError: (err) => errors.push(err),
      });
      state.failSync = true;
      await chain.append(record(1));
      await expect.poll(() => errors.length).toBe(1);
      await expect(chain.append(record(2))).rejects.toMatchObject({ code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED' });
      await chain.close();
    });

    it('still denies when the write itself fails', async () => {
      const { io, state } = faultyIo();
      const chain = await openChain(freshDir(), { sync: 'interval', io });
      state.failWrite = true;
      await expect(chain.append(record(1))).rejects.toMatchObject({ code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED' });
      state.failWrite = false;
      expect((await chain.append(record(2))).seq).toBe(1);
      await chain.close();
    });
  });

  it('refuses an unknown sync mode', async () => {
    await expect(
      openChain(freshDir(), { sync: 'sometimes' as unknown as AuditChainOptions['sync'] }),
    ).rejects.toMatchObject({ code: 'SIDECAR_ERR_CONFIG_INVALID' });
  });

  it('defaults to interval mode', async () => {
    const { io, state } = faultyIo();
    const chain = await AuditChain.open({ dir: freshDir(), agent: 'research', io, syncIntervalMs: 60_000 });
    await chain.append(record(1));
    expect(state.syncs).toBe(0);
    await chain.close();
    expect(state.syncs).toBe(1);
  });
});
