import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditChain } from '../../../sidecar/audit/chain.ts';
import { auditCommand } from '../../../sidecar/cli/audit-command.ts';
import { type CliRun, recordingIo } from '../../support/cli-io.ts';

let root: string;
let intact: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'audit-cli-'));
  let minute = 0;
  const chain = await AuditChain.open({
    dir: join(root, 'intact'),
    agent: 'research',
    now: () => new Date(Date.UTC(2026, 0, 1, 0, minute++)),
    sync: 'never',
  });
  for (let i = 1; i <= 5; i++) {
    await chain.append({
      decision_id: `d-${i}`,
      agent: 'research',
      kind: 'proxy',
      action: { type: i === 5 ? 'tool_call' : 'network', url: `https://example.com/${i}` },
      effect: i % 2 === 0 ? 'DENY' : 'ALLOW',
      rule: i % 2 === 0 ? null : 'example',
      reason: i % 2 === 0 ? 'no_rule_matched' : 'matched',
      policy_digest: 'f'.repeat(64),
    });
  }
  await chain.close();
  intact = chain.path;
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function run(...args: string[]): Promise<CliRun> {
  const { io, result: r } = recordingIo();
  const cmd = auditCommand(io);
  try {
    await cmd.parseAsync(args, { from: 'user' });
  } catch (err) {
    // Commander usage errors are printed, then thrown for the top-level CLI to swallow.
    if (!(err instanceof Error && 'exitCode' in err)) throw err;
  }
  return r;
}

async function damagedCopy(name: string, damage: (lines: string[]) => string[]): Promise<string> {
  const dir = join(root, name);
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir);
  const lines = (await readFile(intact, 'utf8')).split('\n').slice(0, -1);
  const file = join(dir, 'research.audit.jsonl');
  await writeFile(file, `${damage(lines).join('\n')}\n`);
  await writeFile(
    join(dir, 'research.audit.checkpoints.jsonl'),
    await readFile(intact.replace('.jsonl', '.checkpoints.jsonl')),
  );
  return file;
}

describe('audit verify', () => {
  it('exits 0 for an intact chain', async () => {
    const r = await run('verify', intact);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/: ok: 5 entries, head [0-9a-f]{64}\n$/);
    expect(r.stderr).toBe('');
  });

  it.each([
    {
      name: 'modified',
      damage: (l: string[]) => l.with(2, l[2]!.replace('ALLOW', 'DENY')),
      where: ':3: modified: ',
    },
    { name: 'deleted', damage: (l: string[]) => l.toSpliced(1, 1), where: ':2: deleted: ' },
    { name: 'reordered', damage: (l: string[]) => l.with(0, l[1]!).with(1, l[0]!), where: ':1: reordered: ' },
    { name: 'truncated', damage: (l: string[]) => l.slice(0, 3), where: ':4: truncated: ' },
  ])('exits 1 and names file, line and kind: $name', async ({ name, damage, where }) => {
    const file = await damagedCopy(name, damage);
    const r = await run('verify', file);
    expect(r.code).toBe(1);
    expect(r.stderr.startsWith(`${file}${where}`)).toBe(true);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it("exits 1 for another agent's chain under this file name, and takes the agent from --agent", async () => {
    const file = await damagedCopy('renamed', (l) => l);
    const renamed = join(root, 'renamed', 'alice.audit.jsonl');
    await writeFile(renamed, await readFile(file));
    const r = await run('verify', renamed, '--checkpoints', file.replace('.jsonl', '.checkpoints.jsonl'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/alice\.audit\.jsonl:1: modified: .*"research".*"alice"/);
    expect((await run('verify', renamed, '--agent', 'research')).code).toBe(0);
    expect((await run('verify', file, '--agent', 'alice')).code).toBe(1);
  });

  it('takes the checkpoints file from --checkpoints', async () => {
    const file = await damagedCopy('explicit', (l) => l.slice(0, 3));
    const empty = join(root, 'no-checkpoints.jsonl');
    await writeFile(empty, '');
    expect((await run('verify', file, '--checkpoints', empty)).code).toBe(0);
  });

  it.each([
    { name: 'missing file', args: ['verify', '/nonexistent/research.audit.jsonl'] },
    {
      name: 'missing --checkpoints file',
      args: () => ['verify', intact, '--checkpoints', join(root, 'nope.jsonl')],
    },
    { name: 'no file argument', args: ['verify'] },
    { name: 'unknown option', args: () => ['verify', intact, '--bogus'] },
  ])('exits 2 without a stack trace: $name', async ({ args }) => {
    const r = await run(...(typeof args === 'function' ? args() : args));
    expect(r.code).toBe(2);
    expect(r.stderr.length).toBeGreaterThan(0);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('audit query', () => {
  it('prints matching entries as JSON lines by default', async () => {
    const r = await run('query', intact, '--effect', 'DENY');
    expect(r.code).toBe(0);
    const entries = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { seq: number; effect: string });
    expect(entries.map((e) => [e.seq, e.effect])).toEqual([
      [2, 'DENY'],
      [4, 'DENY'],
    ]);
  });

  it('applies --action, --since and --until', async () => {
    const r = await run(
      'query',
      intact,
      '--action',
      'network',
      '--since',
      '2026-01-01T00:01:00Z',
      '--until',
      '2026-01-01T00:03:00Z',
    );
    expect(
      r.stdout
        .trim()
        .split('\n')
        .map((l) => (JSON.parse(l) as { seq: number }).seq),
    ).toEqual([2, 3]);
  });

  it('prints a table with --format table', async () => {
    const r = await run('query', intact, '--agent', 'research', '--format', 'table');
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^TS\s+SEQ\s+AGENT\s+KIND\s+ACTION\s+EFFECT\s+RULE\s+REASON$/);
    expect(lines).toHaveLength(6);
    expect(lines[5]).toMatch(/\s5\s+research\s+proxy\s+tool_call\s+ALLOW\s+example\s+matched$/);
  });

  it.each([
    { name: 'bad --since', args: ['--since', 'yesterday-ish'] },
    { name: 'bad --format', args: ['--format', 'xml'] },
    { name: 'bad --effect', args: ['--effect', 'MAYBE'] },
  ])('exits 2 on misuse: $name', async ({ args }) => {
    const r = await run('query', intact, ...args);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
  });

  it('exits 2 when the file cannot be read', async () => {
    const r = await run('query', join(root, 'missing.audit.jsonl'));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('cannot read');
  });
});
