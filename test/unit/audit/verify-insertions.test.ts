// An inserted line (a copy of a later entry, an entry of another chain of the same or another agent) is damage of
// kind `modified` at the inserted line, even though every original entry is still there in order; lines that were
// only moved (swapped, or one moved earlier) stay `reordered`, and missing lines stay `deleted`.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditChain } from '../../../sidecar/audit/chain.ts';
import type { DamageKind } from '../../../sidecar/audit/verify.ts';
import { verifyAuditText } from '../../../sidecar/audit/verify.ts';
import { record } from './records.ts';

let root: string;
let alice: string[];
/** Another chain of the same agent (another host): same seqs, other hashes. */
let aliceElsewhere: string[];
let bob: string[];

async function lines(dir: string, agent: string, n: number, hostname = 'h'): Promise<string[]> {
  const chain = await AuditChain.open({
    dir: join(root, dir),
    agent,
    sync: 'never',
    checkpointEvery: 1_000_000,
    instance: { hostname, pid: 1 },
  });
  for (let i = 1; i <= n; i++) await chain.append(record(agent, i));
  await chain.close();
  return (await readFile(chain.path, 'utf8')).split('\n').slice(0, -1);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'audit-insert-'));
  alice = await lines('alice', 'alice', 10);
  aliceElsewhere = await lines('alice-elsewhere', 'alice', 20, 'other-host');
  bob = await lines('bob', 'bob', 10);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const text = (ls: readonly string[]) => `${ls.join('\n')}\n`;

interface Case {
  readonly name: string;
  readonly tamper: () => string[];
  readonly want: { line: number; kind: DamageKind };
}

const inserted: Case[] = [
  {
    name: "another agent's entry seq 9 spliced in before line 5",
    tamper: () => alice.toSpliced(4, 0, bob[8]!),
    want: { line: 5, kind: 'modified' },
  },
  {
    name: 'a copy of entry seq 7 inserted before line 3',
    tamper: () => alice.toSpliced(2, 0, alice[6]!),
    want: { line: 3, kind: 'modified' },
  },
  {
    name: 'copies of entries seq 7 and 8 inserted before line 3',
    tamper: () => alice.toSpliced(2, 0, alice[6]!, alice[7]!),
    want: { line: 3, kind: 'modified' },
  },
  {
    name: 'a copy of the last entry inserted before the second-to-last',
    tamper: () => alice.toSpliced(8, 0, alice[9]!),
    want: { line: 9, kind: 'modified' },
  },
  {
    name: "the same agent's entry seq 9 from another chain spliced in before line 5",
    tamper: () => alice.toSpliced(4, 0, aliceElsewhere[8]!),
    want: { line: 5, kind: 'modified' },
  },
  {
    name: "the same agent's entry seq 15 from another chain (beyond this chain's end) spliced in before line 5",
    tamper: () => alice.toSpliced(4, 0, aliceElsewhere[14]!),
    want: { line: 5, kind: 'modified' },
  },
  {
    name: "the same agent's entry seq 11 from another chain spliced in before the last line",
    tamper: () => alice.toSpliced(9, 0, aliceElsewhere[10]!),
    want: { line: 10, kind: 'modified' },
  },
];

const notInserted: Case[] = [
  {
    name: 'adjacent lines swapped',
    tamper: () => alice.with(2, alice[3]!).with(3, alice[2]!),
    want: { line: 3, kind: 'reordered' },
  },
  {
    name: 'distant lines swapped',
    tamper: () => alice.with(1, alice[7]!).with(7, alice[1]!),
    want: { line: 2, kind: 'reordered' },
  },
  {
    name: 'the last two lines swapped',
    tamper: () => alice.with(8, alice[9]!).with(9, alice[8]!),
    want: { line: 9, kind: 'reordered' },
  },
  {
    name: 'entry seq 6 moved before line 3',
    tamper: () => alice.toSpliced(5, 1).toSpliced(2, 0, alice[5]!),
    want: { line: 3, kind: 'reordered' },
  },
  {
    name: 'entry seq 3 moved after line 7',
    tamper: () => alice.toSpliced(2, 1).toSpliced(6, 0, alice[2]!),
    want: { line: 3, kind: 'reordered' },
  },
  {
    name: 'line 3 deleted',
    tamper: () => alice.toSpliced(2, 1),
    want: { line: 3, kind: 'deleted' },
  },
];

describe('verify: inserted lines', () => {
  it.each(inserted)('$name', ({ tamper, want }) => {
    const result = verifyAuditText(text(tamper()));
    expect(result.ok).toBe(false);
    if (!result.ok) expect({ line: result.line, kind: result.kind }).toEqual(want);
  });
});

describe('verify: moved and missing lines are not insertions', () => {
  it.each(notInserted)('$name', ({ tamper, want }) => {
    const result = verifyAuditText(text(tamper()));
    expect(result.ok).toBe(false);
    if (!result.ok) expect({ line: result.line, kind: result.kind }).toEqual(want);
  });
});
