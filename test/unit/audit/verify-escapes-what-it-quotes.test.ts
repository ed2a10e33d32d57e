// `audit verify` never lets the files it distrusts write to the operator's terminal: a checkpoint's `ts` must be an
// ISO-8601 UTC timestamp (parseCheckpoint skips any other line), and whatever a verdict quotes from the files (a
// checkpoint's ts, an agent name) is escaped (cli/io.ts terminalSafe).
//
// Why it matters: checkpoints exist to catch a cut log, and on append-only storage whoever cut the log can still
// append a checkpoint. One with the real count and head but a `ts` of `\r ESC[2K<file>: ok: 3 entries … ESC[8m` became
// "the latest" checkpoint, and the truncation verdict quoted its ts raw: on a terminal, CR and erase-line wiped the
// verdict and conceal hid the rest, so the operator read "ok" for a cut log (only the exit code still said 1).
// (Review round 5, ops: r5-ops-verify-message-escapes.)
import { appendFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditChain } from '../../../sidecar/audit/chain.ts';
import type { AuditEntry, Checkpoint } from '../../../sidecar/audit/entry.ts';
import { GENESIS_HASH, hashEntry, parseCheckpoint, sealEntry } from '../../../sidecar/audit/entry.ts';
import { verifyAuditText } from '../../../sidecar/audit/verify.ts';
import { auditCommand } from '../../../sidecar/cli/audit-command.ts';
import { recordingIo } from '../../support/cli-io.ts';
import { record } from './records.ts';

const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/u;

let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'audit-verify-escapes-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('audit verify on a cut log with a forged checkpoint', () => {
  let file: string;

  beforeAll(async () => {
    const chain = await AuditChain.open({ dir: join(root, 'a'), agent: 'research', sync: 'never' });
    for (let i = 1; i <= 5; i++) await chain.append(record('research', i));
    await chain.close();
    const lines = (await readFile(chain.path, 'utf8')).split('\n').slice(0, 3);
    const dir = join(root, 'cut');
    await mkdir(dir);
    file = join(dir, 'research.audit.jsonl');
    await writeFile(file, `${lines.join('\n')}\n`);
    const checkpoints = await readFile(chain.checkpointsPath, 'utf8');
    const real = JSON.parse(checkpoints.trim().split('\n').at(-1)!) as { count: number; head: string };
    expect(real.count).toBe(5);
    const head3 = (JSON.parse(lines[2]!) as { hash: string }).hash;
    // Appended after the real checkpoint: same count and head, so it would be "the latest" and the verdict quote it.
    const spoof = `\r\u001b[2K${file}: ok: 3 entries, head ${head3}\u001b[8m`;
    await writeFile(join(dir, 'research.audit.checkpoints.jsonl'), checkpoints);
    await appendFile(
      join(dir, 'research.audit.checkpoints.jsonl'),
      `${JSON.stringify({ ts: spoof, agent: 'research', count: real.count, head: real.head })}\n`,
    );
  });

  it('reports the truncation without passing terminal control sequences from the file through', async () => {
    const { io, result: r } = recordingIo();
    await auditCommand(io).parseAsync(['verify', file], { from: 'user' });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(
      /:4: truncated: the file ends after 3 entries but the checkpoint of \S+Z recorded 5\n$/,
    );
    expect(r.stderr.trimEnd()).not.toMatch(UNSAFE);
  });
});

describe('parseCheckpoint: ts must be an ISO-8601 UTC timestamp', () => {
  const line = (ts: unknown) => JSON.stringify({ ts, agent: 'research', count: 3, head: 'a'.repeat(64) });

  it.each([
    { ts: '2026-01-01T12:00:30.000Z', note: 'what the chain writes (toISOString)' },
    { ts: '2026-01-01T12:00:30Z', note: 'no fraction' },
    { ts: '2026-01-01T12:00:30.123456Z', note: 'microseconds' },
    { ts: '2028-02-29T23:59:59.999Z', note: 'a leap day' },
  ])('accepts $ts ($note)', ({ ts }) => {
    expect(parseCheckpoint(line(ts))?.ts).toBe(ts);
  });

  it.each([
    { ts: '\r\u001b[2Kx: ok\u001b[8m', note: 'terminal control sequences' },
    { ts: '2026-01-01T12:00:30.000Z\u001b[8m', note: 'a timestamp with a tail' },
    { ts: '\u202e2026-01-01T12:00:30.000Z', note: 'a bidi override in front' },
    { ts: '2026-01-01T12:00:30.000Z\n', note: 'a trailing newline' },
    { ts: '2026-01-01T12:00:30.000+01:00', note: 'not UTC' },
    { ts: '2026-01-01T12:00:30.000', note: 'no zone' },
    { ts: '2026-01-01 12:00:30Z', note: 'a space for T' },
    { ts: '2026-01-01', note: 'a date' },
    { ts: '2026-02-30T00:00:00.000Z', note: 'no such day' },
    { ts: '2026-01-01T24:00:00.000Z', note: 'hour 24' },
    { ts: '+020260-01-01T00:00:00.000Z', note: 'an expanded year' },
    { ts: '', note: 'empty' },
    { ts: 1767225600000, note: 'a number' },
  ])('refuses $note', ({ ts }) => {
    expect(parseCheckpoint(line(ts))).toBeUndefined();
  });
});

describe('verify messages escape what they quote from the files', () => {
  // Checkpoints handed over directly (verifyAuditText takes them from any caller), so they skip parseCheckpoint.
  const HOSTILE = '\r\u001b[2Kok\u001b[8m\u009b2J\u202e\u200b\u2028';

  function chainOf(n: number, agentAt: (seq: number) => string = () => 'research'): string[] {
    let prev = GENESIS_HASH;
    const out: string[] = [];
    for (let seq = 1; seq <= n; seq++) {
      const { entry, line } = sealEntry({
        seq,
        ts: '2026-01-01T00:00:00.000Z',
        ...record(agentAt(seq), seq),
        instance: { hostname: 'h', pid: 1 },
        prev,
      });
      prev = entry.hash;
      out.push(line);
    }
    return out;
  }
  const text = (ls: readonly string[]) => `${ls.join('\n')}\n`;
  const hashOf = (line: string) => (JSON.parse(line) as AuditEntry).hash;

  it.each<{ name: string; kind: string; build: () => { text: string; checkpoints: Checkpoint[] } }>([
    {
      name: 'the file ends before the latest checkpoint',
      kind: 'truncated',
      build: () => {
        const ls = chainOf(5);
        const cp = { ts: HOSTILE, agent: 'research', count: 5, head: hashOf(ls[4]!) };
        return { text: text(ls.slice(0, 3)), checkpoints: [cp] };
      },
    },
    {
      name: 'the entry at a checkpoint does not carry its head',
      kind: 'truncated',
      build: () => ({
        text: text(chainOf(5)),
        checkpoints: [{ ts: HOSTILE, agent: 'research', count: 3, head: 'f'.repeat(64) }],
      }),
    },
    {
      name: 'an entry was edited and rehashed under a checkpoint',
      kind: 'modified',
      build: () => {
        const ls = chainOf(5);
        const original = hashOf(ls[2]!);
        const entry = JSON.parse(ls[2]!) as Record<string, unknown>;
        entry['reason'] = 'edited';
        entry['hash'] = hashEntry(entry as never);
        ls[2] = JSON.stringify(entry);
        return {
          text: text(ls),
          checkpoints: [{ ts: HOSTILE, agent: 'research', count: 3, head: original }],
        };
      },
    },
    {
      name: "another agent's checkpoint (its ts and agent name quoted)",
      kind: 'modified',
      build: () => ({
        text: text(chainOf(3)),
        checkpoints: [{ ts: HOSTILE, agent: `evil${HOSTILE}`, count: 2, head: 'f'.repeat(64) }],
      }),
    },
    {
      name: "another agent's entry (its agent name quoted)",
      kind: 'modified',
      build: () => ({
        text: text(chainOf(3, (seq) => (seq === 2 ? `evil${HOSTILE}` : 'research'))),
        checkpoints: [],
      }),
    },
  ])('$name: $kind, with the quoted text escaped', ({ kind, build }) => {
    const { text: t, checkpoints } = build();
    const result = verifyAuditText(t, checkpoints, 'research');
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.kind).toBe(kind);
    expect(result.message).not.toMatch(UNSAFE);
    expect(result.message).toContain('\\u001b[2Kok\\u001b[8m\\u009b2J\\u202e\\u200b\\u2028');
  });
});
