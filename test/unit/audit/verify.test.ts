import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditChain } from '../../../sidecar/audit/chain.ts';
import type { AuditRecord, Checkpoint } from '../../../sidecar/audit/entry.ts';
import { hashEntry, parseCheckpoint } from '../../../sidecar/audit/entry.ts';
import type { DamageKind } from '../../../sidecar/audit/verify.ts';
import { verifyAuditFile, verifyAuditText } from '../../../sidecar/audit/verify.ts';

const ENTRIES = 10;

function record(i: number): AuditRecord {
  return {
    decision_id: `d-${i}`,
    agent: 'research',
    kind: 'proxy',
    action: {
      type: 'network',
      method: 'GET',
      url: `https://api.example.com/items/${i}`,
      host: 'api.example.com',
    },
    effect: i % 3 === 0 ? 'DENY' : 'ALLOW',
    rule: i % 3 === 0 ? null : 'example-read',
    reason: i % 3 === 0 ? 'no_rule_matched' : 'matched',
    policy_digest: 'a'.repeat(64),
  };
}

let root: string;
let lines: string[];
let checkpoints: Checkpoint[];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'audit-verify-'));
  let tick = 0;
  const chain = await AuditChain.open({
    dir: join(root, 'source'),
    agent: 'research',
    now: () => new Date(Date.UTC(2026, 0, 1, 12, 0, tick++)),
    instance: { hostname: 'test', pid: 1 },
    sync: 'never',
    checkpointEvery: 1_000_000,
  });
  for (let i = 1; i <= ENTRIES; i++) await chain.append(record(i));
  await chain.close();
  const text = await readFile(chain.path, 'utf8');
  lines = text.split('\n').slice(0, -1);
  checkpoints = (await readFile(chain.checkpointsPath, 'utf8'))
    .split('\n')
    .map((l) => parseCheckpoint(l))
    .filter((cp) => cp !== undefined);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Parses line n (1-based), lets `edit` change it, and optionally recomputes its hash. */
function edited(n: number, edit: (e: Record<string, unknown>) => void, rehash: boolean): string {
  const entry = JSON.parse(lines[n - 1]!) as Record<string, unknown>;
  const before = JSON.stringify(entry);
  edit(entry);
  if (JSON.stringify(entry) === before) throw new Error('the edit changed nothing');
  if (rehash) entry['hash'] = hashEntry(entry as never);
  return JSON.stringify(entry);
}

function checkpointAt(n: number): Checkpoint {
  const { hash } = JSON.parse(lines[n - 1]!) as { hash: string };
  return { ts: '2026-01-01T12:00:30.000Z', agent: 'research', count: n, head: hash };
}

function join_(ls: readonly string[], terminated = true): string {
  return ls.join('\n') + (terminated && ls.length > 0 ? '\n' : '');
}

interface TamperCase {
  readonly name: string;
  /** Returns the tampered file text and the checkpoints the verifier gets. */
  readonly tamper: () => { text: string; checkpoints: readonly Checkpoint[] };
  readonly want: { ok: true; count: number } | { ok: false; line: number; kind: DamageKind };
}

const withCheckpoints = (text: string) => ({ text, checkpoints });
const without = (text: string) => ({ text, checkpoints: [] });

const cases: TamperCase[] = [
  { name: 'intact chain', tamper: () => withCheckpoints(join_(lines)), want: { ok: true, count: ENTRIES } },
  {
    name: 'field edited',
    tamper: () =>
      withCheckpoints(
        join_(
          lines.with(
            3,
            edited(4, (e) => (e['effect'] = 'REQUIRE_APPROVAL'), false),
          ),
        ),
      ),
    want: { ok: false, line: 4, kind: 'modified' },
  },
  {
    name: 'field edited and hash recomputed: only the chain catches it',
    tamper: () =>
      withCheckpoints(
        join_(
          lines.with(
            3,
            edited(4, (e) => (e['reason'] = 'approved_by_admin'), true),
          ),
        ),
      ),
    want: { ok: false, line: 4, kind: 'modified' },
  },
  {
    name: 'field edited and rehashed where a checkpoint covers it',
    tamper: () => ({
      text: join_(
        lines.with(
          3,
          edited(4, (e) => (e['rule'] = 'forged'), true),
        ),
      ),
      checkpoints: [checkpointAt(4), ...checkpoints],
    }),
    want: { ok: false, line: 4, kind: 'modified' },
  },
  {
    name: 'prev rewritten',
    tamper: () =>
      withCheckpoints(
        join_(
          lines.with(
            4,
            edited(5, (e) => (e['prev'] = 'b'.repeat(64)), false),
          ),
        ),
      ),
    want: { ok: false, line: 5, kind: 'modified' },
  },
  {
    name: 'prev rewritten and hash recomputed',
    tamper: () =>
      withCheckpoints(
        join_(
          lines.with(
            4,
            edited(5, (e) => (e['prev'] = 'b'.repeat(64)), true),
          ),
        ),
      ),
    want: { ok: false, line: 5, kind: 'modified' },
  },
  {
    name: 'middle line replaced by garbage',
    tamper: () => withCheckpoints(join_(lines.with(5, 'not json at all'))),
    want: { ok: false, line: 6, kind: 'modified' },
  },
  {
    name: 'line deleted',
    tamper: () => withCheckpoints(join_(lines.toSpliced(3, 1))),
    want: { ok: false, line: 4, kind: 'deleted' },
  },
  {
    name: 'first line deleted',
    tamper: () => withCheckpoints(join_(lines.slice(1))),
    want: { ok: false, line: 1, kind: 'deleted' },
  },
  {
    name: 'two lines deleted',
    tamper: () => withCheckpoints(join_(lines.toSpliced(3, 2))),
    want: { ok: false, line: 4, kind: 'deleted' },
  },
  {
    name: 'adjacent lines swapped',
    tamper: () => withCheckpoints(join_(lines.with(2, lines[3]!).with(3, lines[2]!))),
    want: { ok: false, line: 3, kind: 'reordered' },
  },
  {
    name: 'distant lines swapped',
    tamper: () => withCheckpoints(join_(lines.with(1, lines[7]!).with(7, lines[1]!))),
    want: { ok: false, line: 2, kind: 'reordered' },
  },
  {
    name: 'line duplicated',
    tamper: () => withCheckpoints(join_(lines.toSpliced(3, 0, lines[2]!))),
    want: { ok: false, line: 4, kind: 'modified' },
  },
  {
    name: 'tail cut, checkpoints present',
    tamper: () => withCheckpoints(join_(lines.slice(0, 7))),
    want: { ok: false, line: 8, kind: 'truncated' },
  },
  {
    name: 'tail cut mid-line, checkpoints present',
    tamper: () => withCheckpoints(join_(lines.slice(0, 7)) + lines[7]!.slice(0, 40)),
    want: { ok: false, line: 8, kind: 'truncated' },
  },
  {
    name: 'whole log emptied, checkpoints present',
    tamper: () => withCheckpoints(''),
    want: { ok: false, line: 1, kind: 'truncated' },
  },
  {
    name: 'tail cut without checkpoints: undetectable by the chain alone',
    tamper: () => without(join_(lines.slice(0, 7))),
    want: { ok: true, count: 7 },
  },
  {
    name: 'last entry edited and rehashed: only the checkpoint catches it',
    tamper: () =>
      withCheckpoints(
        join_(
          lines.with(
            ENTRIES - 1,
            edited(ENTRIES, (e) => (e['effect'] = 'DENY'), true),
          ),
        ),
      ),
    want: { ok: false, line: ENTRIES, kind: 'truncated' },
  },
  {
    name: 'entry at a checkpoint count does not carry its head (tail replaced)',
    tamper: () => ({
      text: join_(lines),
      checkpoints: [{ ts: '2026-01-01T00:00:00.000Z', agent: 'research', count: 5, head: 'f'.repeat(64) }],
    }),
    want: { ok: false, line: 5, kind: 'truncated' },
  },
  {
    name: 'torn last line after the last checkpoint',
    tamper: () => withCheckpoints(join_(lines) + '{"seq":11,"ts":"2026-01-'),
    want: { ok: false, line: ENTRIES + 1, kind: 'torn' },
  },
  {
    name: 'unparsable terminated last line',
    tamper: () => withCheckpoints(join_([...lines, '\u0000\u0000\u0000'])),
    want: { ok: false, line: ENTRIES + 1, kind: 'torn' },
  },
  {
    name: 'complete last entry without its newline, no checkpoint',
    tamper: () => without(join_(lines, false)),
    want: { ok: false, line: ENTRIES, kind: 'torn' },
  },
];

describe('verify', () => {
  it.each(cases)('$name', async ({ tamper, want }) => {
    const { text, checkpoints: cps } = tamper();
    const fromText = verifyAuditText(text, cps);
    expect(fromText.ok).toBe(want.ok);
    if (want.ok && fromText.ok) {
      expect(fromText.count).toBe(want.count);
      expect(fromText.head.count).toBe(want.count);
    }
    if (!want.ok && !fromText.ok) {
      expect({ line: fromText.line, kind: fromText.kind }).toEqual({ line: want.line, kind: want.kind });
      expect(fromText.message.length).toBeGreaterThan(0);
    }

    // The streaming file path must agree with the in-memory one.
    const dir = await mkdtemp(join(root, 'case-'));
    const file = join(dir, 'research.audit.jsonl');
    const cpFile = join(dir, 'cps.jsonl');
    await writeFile(file, text);
    await writeFile(cpFile, cps.map((cp) => JSON.stringify(cp)).join('\n'));
    expect(await verifyAuditFile(file, { checkpointsPath: cpFile })).toEqual(fromText);
  });

  it('never accepts a chain with one line deleted, two swapped, one byte changed or the tail cut', () => {
    const n = lines.length;
    const tamper = fc.oneof(
      fc.integer({ min: 0, max: n - 1 }).map((i) => lines.toSpliced(i, 1)),
      fc
        .tuple(fc.integer({ min: 0, max: n - 1 }), fc.integer({ min: 0, max: n - 1 }))
        .filter(([i, j]) => i !== j)
        .map(([i, j]) => lines.with(i, lines[j]!).with(j, lines[i]!)),
      fc
        .tuple(fc.integer({ min: 0, max: n - 1 }), fc.nat(), fc.integer({ min: 0x20, max: 0x7e }))
        .map(([i, at, code]) => {
          const line = lines[i]!;
          const pos = at % line.length;
          return lines.with(i, line.slice(0, pos) + String.fromCharCode(code) + line.slice(pos + 1));
        })
        .filter((ls) => ls.some((l, i) => l !== lines[i])),
      fc.integer({ min: 0, max: n - 1 }).map((k) => lines.slice(0, k)),
    );
    fc.assert(
      fc.property(tamper, (tampered) => {
        expect(verifyAuditText(join_(tampered), checkpoints).ok).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('uses the sibling checkpoints file by default', async () => {
    const dir = await mkdtemp(join(root, 'sibling-'));
    await writeFile(join(dir, 'research.audit.jsonl'), join_(lines.slice(0, 4)));
    await writeFile(join(dir, 'research.audit.checkpoints.jsonl'), `${JSON.stringify(checkpoints[0])}\n`);
    const result = await verifyAuditFile(join(dir, 'research.audit.jsonl'));
    expect(result).toMatchObject({ ok: false, line: 5, kind: 'truncated' });
  });

  it('reads files larger than one stream chunk line by line', async () => {
    const dir = await mkdtemp(join(root, 'large-'));
    const chain = await AuditChain.open({ dir, agent: 'research', sync: 'never' });
    await Promise.all(Array.from({ length: 2000 }, (_, i) => chain.append(record(i))));
    await chain.close();
    expect(await verifyAuditFile(chain.path)).toMatchObject({ ok: true, count: 2000 });
  });

  it('rejects with the file system error when the file is missing', async () => {
    await expect(verifyAuditFile(join(root, 'missing.audit.jsonl'))).rejects.toMatchObject({
      code: 'ENOENT',
    });
  });
});
