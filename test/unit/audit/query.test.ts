import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuditEntry, AuditRecord } from '../../../sidecar/audit/entry.ts';
import { auditFileName, GENESIS_HASH, sealEntry } from '../../../sidecar/audit/entry.ts';
import type { AuditFilter } from '../../../sidecar/audit/query.ts';
import { AUDIT_CELL_WIDTH, formatAuditTable, queryAudit } from '../../../sidecar/audit/query.ts';
import type { ActionType, Effect } from '../../../sidecar/policy/types.ts';

let root: string;
let path: string;

// seq: agent, effect, action type, kind; entry n is stamped 2026-01-01T00:0n:00Z.
const ROWS: [string, Effect, ActionType, string][] = [
  ['research', 'ALLOW', 'network', 'proxy'],
  ['research', 'DENY', 'network', 'proxy'],
  ['research', 'ALLOW', 'tool_call', 'tool'],
  ['writer', 'DENY', 'file_write', 'evaluate'],
  ['writer', 'REQUIRE_APPROVAL', 'shell_exec', 'approval'],
  ['research', 'ALLOW', 'model', 'model'],
];

function record([agent, effect, type, kind]: (typeof ROWS)[number], i: number): AuditRecord {
  return {
    decision_id: `d-${i}`,
    agent,
    kind,
    action: { type },
    effect,
    rule: effect === 'DENY' ? null : `rule-${i}`,
    reason: effect === 'DENY' ? 'no_rule_matched' : 'matched',
    policy_digest: 'e'.repeat(64),
  };
}

// Query reads any file of entries, a mix of agents included (the writer itself never mixes them), so the
// entries are sealed here rather than appended through AuditChain.
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'audit-query-'));
  path = join(root, auditFileName('research'));
  let prev = GENESIS_HASH;
  const lines = ROWS.map((row, i) => {
    const { entry, line } = sealEntry({
      seq: i + 1,
      ts: at(i + 1).toISOString(),
      ...record(row, i + 1),
      instance: { hostname: 'test', pid: 1 },
      prev,
    });
    prev = entry.hash;
    return line;
  });
  await writeFile(path, `${lines.join('\n')}\n{"torn":`);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function collect(filter: AuditFilter): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  for await (const e of queryAudit(path, filter)) out.push(e);
  return out;
}

const at = (minute: number) => new Date(Date.UTC(2026, 0, 1, 0, minute));

describe('queryAudit', () => {
  it.each<{ name: string; filter: AuditFilter; seqs: number[] }>([
    {
      name: 'no filter: every entry, skipping the line that is not one',
      filter: {},
      seqs: [1, 2, 3, 4, 5, 6],
    },
    { name: 'agent', filter: { agent: 'writer' }, seqs: [4, 5] },
    { name: 'effect', filter: { effect: 'DENY' }, seqs: [2, 4] },
    { name: 'action type', filter: { action: 'network' }, seqs: [1, 2] },
    { name: 'kind', filter: { kind: 'approval' }, seqs: [5] },
    { name: 'since is inclusive', filter: { since: at(5) }, seqs: [5, 6] },
    { name: 'until is exclusive', filter: { until: at(3) }, seqs: [1, 2] },
    { name: 'since and until', filter: { since: at(2), until: at(4) }, seqs: [2, 3] },
    { name: 'filters combine', filter: { agent: 'research', effect: 'ALLOW', since: at(2) }, seqs: [3, 6] },
    { name: 'nothing matches', filter: { effect: 'DENY', action: 'model' }, seqs: [] },
  ])('$name', async ({ filter, seqs }) => {
    expect((await collect(filter)).map((e) => e.seq)).toEqual(seqs);
  });
});

describe('queryAudit and the characters JSON leaves raw', () => {
  // The chain writes U+2028 and U+2029 raw inside JSON strings. node:readline splits lines at them too, so an agent
  // that put one in its action made its entry unparseable to query, and so invisible to `audit query`.
  it.each([
    { name: 'line separator', char: '\u2028' },
    { name: 'paragraph separator', char: '\u2029' },
    { name: 'next line (C1)', char: '\u0085' },
    { name: 'carriage return (escaped by JSON)', char: '\r' },
  ])('still finds an entry holding a $name, split at line feeds only', async ({ char }) => {
    const file = join(root, `sep-${char.codePointAt(0)}.audit.jsonl`);
    const { line } = sealEntry({
      seq: 1,
      ts: at(1).toISOString(),
      ...record(ROWS[0]!, 1),
      action: { type: 'tool_call', tool: `a${char}b` },
      instance: { hostname: 'test', pid: 1 },
      prev: GENESIS_HASH,
    });
    await writeFile(file, `${line}\n${line}\r\n`);
    const found: AuditEntry[] = [];
    for await (const e of queryAudit(file)) found.push(e);
    expect(found.map((e) => (e.action as { tool?: string }).tool)).toEqual([`a${char}b`, `a${char}b`]);
  });
});

describe('formatAuditTable', () => {
  it('prints a header and one aligned row per entry', async () => {
    const table = formatAuditTable(await collect({ effect: 'DENY' }));
    const [header, ...rows] = table.split('\n');
    expect(header!.split(/\s+/)).toEqual([
      'TS',
      'SEQ',
      'AGENT',
      'KIND',
      'ACTION',
      'EFFECT',
      'RULE',
      'REASON',
    ]);
    expect(rows.map((r) => r.split(/\s+/))).toEqual([
      ['2026-01-01T00:02:00.000Z', '2', 'research', 'proxy', 'network', 'DENY', '-', 'no_rule_matched'],
      ['2026-01-01T00:04:00.000Z', '4', 'writer', 'evaluate', 'file_write', 'DENY', '-', 'no_rule_matched'],
    ]);
    expect(rows[0]!.indexOf('DENY')).toBe(rows[1]!.indexOf('DENY'));
  });

  it('keeps terminal control characters out of the table', () => {
    const [entry] = [
      { ts: 't', seq: 1, agent: 'a', kind: 'k', action: null, effect: null, rule: '\u001b[2Jx', reason: 'r' },
    ];
    expect(formatAuditTable([entry as unknown as AuditEntry])).not.toContain('\u001b');
  });

  // Entries come from files that may be forged: a value of the wrong type is printed as JSON, never thrown on, and
  // every cell is escaped and cut to AUDIT_CELL_WIDTH.
  it.each([
    { name: 'an object type', type: { toString: 1 }, shown: '{"toString":1}' },
    { name: 'an array type', type: ['network'], shown: '["network"]' },
    { name: 'a number type', type: 5, shown: '5' },
    { name: 'a boolean type', type: false, shown: 'false' },
    { name: 'an empty type', type: '', shown: '-' },
    { name: 'a bidi override', type: 'net\u202ework', shown: 'net\\u202ework' },
    { name: 'a long type', type: 'x'.repeat(500), shown: `${'x'.repeat(AUDIT_CELL_WIDTH - 1)}…` },
  ])('prints $name in the ACTION column as $shown', ({ type, shown }) => {
    const entry = {
      ts: 't',
      seq: 1,
      agent: 'a',
      kind: 'k',
      action: { type },
      effect: 'DENY',
      rule: null,
      reason: 'r',
    };
    const [, row] = formatAuditTable([entry as unknown as AuditEntry]).split('\n');
    expect(row!.split(/\s+/)[4]).toBe(shown);
  });
});
