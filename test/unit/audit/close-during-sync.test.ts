// AuditChain.close() while a background fdatasync (interval mode, the default) is in flight syncs again, so the last
// batch is on the device and the final checkpoint covers it. Found by review, round 6:
// shutdown() calls syncNow(), which hands back the sync already running: that sync's target was taken before the
// last batch was written, and its finally does not reschedule once closing. The last batch is then never synced and
// the final checkpoint does not cover it.
import type { FileHandle } from 'node:fs/promises';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { AuditChain, nodeAuditIo } from '../../../sidecar/audit/chain.ts';
import type { Checkpoint } from '../../../sidecar/audit/entry.ts';
import { record } from '../audit/records.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'r6-close-sync-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

it('close() during a background sync syncs and checkpoints every entry written', async () => {
  let releaseFirst!: () => void;
  let firstEntered!: () => void;
  const entered = new Promise<void>((r) => {
    firstEntered = r;
  });
  const held = new Promise<void>((r) => {
    releaseFirst = r;
  });
  let syncs = 0;
  // Which entries (by file size) each sync call could cover.
  const coveredBytes: number[] = [];
  const io = {
    sync: async (file: FileHandle) => {
      syncs++;
      const { size } = await file.stat();
      coveredBytes.push(size);
      if (syncs === 1) {
        firstEntered();
        await held;
      }
      await nodeAuditIo.sync(file);
    },
  };
  const checkpoints: Checkpoint[] = [];
  const dir = join(root, 'a');
  const chain = await AuditChain.open({
    dir,
    agent: 'r6',
    sync: 'interval',
    syncIntervalMs: 1,
    checkpointEvery: 1_000_000,
    io,
    onCheckpoint: (cp) => checkpoints.push(cp),
  });
  await chain.append(record('r6', 1));
  await entered; // the background sync of entry 1 is now running (held)
  await chain.append(record('r6', 2)); // written while that sync runs
  const closed = chain.close();
  releaseFirst();
  await closed;

  const size = (await readFile(chain.path)).length;
  // Entry 2 was answered for (the decision it records went out): close must sync it and checkpoint it.
  expect(checkpoints.at(-1)?.count).toBe(2);
  expect(coveredBytes.at(-1)).toBe(size);
  const onDisk = (await readFile(chain.checkpointsPath, 'utf8'))
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l));
  expect(onDisk.at(-1).count).toBe(2);
});
