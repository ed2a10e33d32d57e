// `audit query` prints every entry of an audit chain, whatever the agent put in it, without letting that data take
// over the operator's terminal or the table's layout.
//
// Why it matters: the agent chooses its actions, and the enforcer audits them verbatim. Before:
// - JSONL (the default) used JSON.stringify alone, which leaves C1 controls (8-bit CSI, OSC, ST: clear screen,
//   retitle, clipboard write, hyperlinks) and bidi/zero-width characters raw;
// - the table escaped only C0/C1, so a bidi override in an action type reordered the row;
// - one 8,000-character action type padded every row to 8,000 columns, pushing each EFFECT far from its own row;
// - an action type that is not a string ({"toString":1}) made the table throw: no output at all.
// Now JSONL escapes with cli/io.ts terminalSafeJson (same values, still one JSON object per line), and the table
// escapes with terminalSafe, cuts each cell to AUDIT_CELL_WIDTH and prints non-string values as JSON.
// The agent's actions go through /v1/evaluate's strict JSON parser and the real enforcer into a real chain.
// (Review round 5, ops: r5-ops-audit-query-escapes.)
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditChain } from '../../../sidecar/audit/chain.ts';
import { AUDIT_CELL_WIDTH } from '../../../sidecar/audit/query.ts';
import { auditCommand } from '../../../sidecar/cli/audit-command.ts';
import { SidecarEnforcer } from '../../../sidecar/server/enforcer.ts';
import { createMetrics } from '../../../sidecar/server/metrics.ts';
import { PolicyHolder } from '../../../sidecar/server/policy-holder.ts';
import { RateLimiter } from '../../../sidecar/server/rate-limiter.ts';
import { parseStrictJson } from '../../../sidecar/server/strict-json.ts';
import { type CliRun, recordingIo } from '../../support/cli-io.ts';
import { HOSTILE_CHARS, unsafeIn } from './terminal-chars.ts';

const POLICY = `
agent: tester
rules:
  - name: allow-ping
    action: tool_call
    conditions: { tool: { equals: ping } }
    effect: ALLOW
`;

const PING = '{"type":"tool_call","tool":"ping"}';

// What the agent sends, one /v1/evaluate body each, in order.
const BODIES: readonly { readonly name: string; readonly body: string }[] = [
  { name: 'an ordinary allowed call', body: PING },
  {
    // 8-bit C1 controls (CSI clear screen, OSC 0 title, OSC 52 clipboard write, OSC 8 hyperlink, each ended by ST)
    // and a bidi override in an argument.
    name: 'C1 controls and a bidi override in an argument',
    body: JSON.stringify({
      type: 'tool_call',
      tool: 'shell',
      args: {
        note:
          '\u009b2J\u009bH' +
          '\u009d0;all good\u009c' +
          '\u009d52;c;cm0gLXJmIC8K\u009c' +
          '\u009d8;;https://evil.example/\u009cclick\u009d8;;\u009c' +
          'ls \u202e/ fr- mr',
      },
    }),
  },
  // An unknown action type is still audited as the agent sent it, and shown in the table's ACTION column.
  {
    name: 'bidi and zero-width characters in the action type',
    body: '{"type":"network\\u202e\\u200b\\u2066x"}',
  },
  {
    name: 'every hostile character in the action type',
    body: JSON.stringify({ type: `x${HOSTILE_CHARS.map((c) => c.char).join('')}` }),
  },
  // Strict JSON accepts these, the policy denies them (malformed), the chain records them verbatim.
  { name: 'an object action type', body: '{"type":{"toString":1}}' },
  { name: 'an array action type', body: '{"type":["network"]}' },
  { name: 'a number action type', body: '{"type":5}' },
  // 8,000 characters, well inside the 64 KiB evaluate limit.
  { name: 'an 8,000-character action type', body: JSON.stringify({ type: `network${' '.repeat(8000)}x` }) },
  { name: 'another ordinary allowed call', body: PING },
];

let root: string;
let auditFile: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'audit-query-agent-data-'));
  const policyFile = join(root, 'policy.yaml');
  await writeFile(policyFile, POLICY);
  const logger = pino({ level: 'silent' });
  const metrics = createMetrics();
  const policies = await PolicyHolder.load(policyFile, logger, metrics);
  const chain = await AuditChain.open({ dir: join(root, 'audit'), agent: 'tester', sync: 'never' });
  const enforcer = new SidecarEnforcer({
    policies,
    audit: chain,
    approvals: { request: async () => ({ outcome: 'timeout' }) },
    limiter: new RateLimiter(),
    metrics,
    logger,
  });
  for (const { body } of BODIES) {
    const parsed = parseStrictJson(body);
    if (!parsed.ok) throw new Error(`strict JSON refused the body: ${parsed.why}`);
    await enforcer.decide({ kind: 'evaluate', action: parsed.value });
  }
  await chain.close();
  auditFile = chain.path;
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Run extends CliRun {
  thrown: unknown;
}

async function run(...args: string[]): Promise<Run> {
  const { io, result } = recordingIo();
  const r: Run = Object.assign(result, { thrown: undefined as unknown });
  const cmd = auditCommand(io);
  try {
    await cmd.parseAsync(args, { from: 'user' });
  } catch (err) {
    if (!(err instanceof Error && 'exitCode' in err)) r.thrown = err;
  }
  return r;
}

describe('audit query (JSONL, the default) on entries the agent shaped', () => {
  it('prints every entry, one JSON object per line with the values the file holds', async () => {
    const r = await run('query', auditFile);
    expect(r.thrown).toBeUndefined();
    expect(r.code).toBe(0);
    const stored = (await readFile(auditFile, 'utf8')).trimEnd().split('\n');
    const printed = r.stdout.trimEnd().split('\n');
    expect(printed).toHaveLength(BODIES.length);
    expect(printed.map((l) => JSON.parse(l))).toEqual(stored.map((l) => JSON.parse(l)));
  });

  it('prints no raw C1 controls, bidi overrides, zero-width characters or separators', async () => {
    const r = await run('query', auditFile);
    expect(r.stdout).toContain('"tool":"shell"');
    expect(r.stdout).toContain('\\u009b2J');
    expect(unsafeIn(r.stdout)).toEqual([]);
  });
});

describe('audit query --format table on entries the agent shaped', () => {
  let rows: string[];

  beforeAll(async () => {
    const r = await run('query', auditFile, '--format', 'table');
    expect(r.thrown).toBeUndefined();
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    rows = r.stdout.trimEnd().split('\n');
  });

  it('prints a row for every entry, the non-string action types included', () => {
    expect(rows).toHaveLength(BODIES.length + 1);
  });

  it('prints no raw control, format or separator character', () => {
    expect(unsafeIn(rows.join('\n'))).toEqual([]);
    expect(rows[3]).toContain('network\\u202e\\u200b\\u2066x');
  });

  it.each([
    { row: 5, shown: '{"toString":1}' },
    { row: 6, shown: '["network"]' },
    { row: 7, shown: '5' },
  ])('shows the action type of row $row as JSON: $shown', ({ row, shown }) => {
    expect(rows[row]!.split(/\s+/)[4]).toBe(shown);
  });

  it('cuts a long action type with … and keeps every EFFECT in its column, next to its own row', () => {
    const wide = rows[8]!;
    expect(wide).toContain(`network${' '.repeat(AUDIT_CELL_WIDTH - 'network'.length - 1)}…`);
    const effectAt = rows[0]!.indexOf('EFFECT');
    expect(effectAt).toBeLessThan(200);
    for (const row of rows.slice(1)) expect(row.slice(effectAt)).toMatch(/^(ALLOW|DENY) /);
  });
});
