// The policy CLI as a user runs it: `node sidecar/cli/main.ts ...` in a child process; exit codes, stdout, stderr.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const MAIN = join(ROOT, 'sidecar/cli/main.ts');
const RESEARCH = 'policies/research-agent.yaml';

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function cli(args: readonly string[], stdin?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [MAIN, ...args],
      { cwd: ROOT, maxBuffer: 16 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(stdin ?? '');
  });
}
const lines = (s: string) => s.split('\n').filter((l) => l !== '');
const decisions = (s: string) =>
  lines(s).map((l) => JSON.parse(l) as { effect: string; rule: string | null; reason: string });

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'policy-cli-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('policy check', () => {
  it.concurrent('exits 0 and names every shipped policy', async () => {
    const r = await cli(['policy', 'check', 'policies/']);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(lines(r.stdout)).toEqual([
      'ok policies/admin.yaml (agent admin, 5 rules)',
      'ok policies/basic-user.yaml (agent basic-user, 5 rules)',
      'ok policies/coding-agent.yaml (agent coding-agent, 3 rules)',
      'ok policies/deploy-agent.yaml (agent deploy-agent, 2 rules)',
      'ok policies/research-agent.yaml (agent research-agent, 2 rules)',
      'ok policies/support-agent.yaml (agent support-agent, 5 rules)',
    ]);
  });

  it.concurrent('exits 2 with one file:line:col line per problem on stderr', async () => {
    const file = 'test/fixtures/policy/invalid/several-problems.yaml';
    const r = await cli(['policy', 'check', file]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    const errs = lines(r.stderr);
    expect(errs).toHaveLength(10);
    for (const l of errs) expect(l).toMatch(new RegExp(`^${file}:\\d+:\\d+: `));
    expect(errs).toContain(`${file}:6:5: rules[0]: unknown key "conditons"`);
  });

  it.concurrent('checks every file, reporting the good ones, and still exits 2 when one is bad', async () => {
    const r = await cli(['policy', 'check', RESEARCH, 'test/fixtures/policy/invalid/conditions-typo.yaml']);
    expect(r.code).toBe(2);
    expect(lines(r.stdout)).toEqual([`ok ${RESEARCH} (agent research-agent, 2 rules)`]);
    expect(lines(r.stderr)).toEqual([
      'test/fixtures/policy/invalid/conditions-typo.yaml:6:5: rules[0]: unknown key "conditons"',
    ]);
  });

  it.concurrent('a directory of invalid policies lists problems for each file', async () => {
    const r = await cli(['policy', 'check', 'test/fixtures/policy/invalid/']);
    expect(r.code).toBe(2);
    const files = new Set(lines(r.stderr).map((l) => l.split(':')[0]));
    expect(files.size).toBeGreaterThanOrEqual(25);
  });

  it.concurrent('a missing path or an empty directory is a usage error', async () => {
    const missing = await cli(['policy', 'check', 'no/such/dir']);
    expect(missing.code).toBe(2);
    const empty = join(dir, 'empty');
    await mkdir(empty);
    const none = await cli(['policy', 'check', empty]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('no policy files found');
  });
});

describe('eval', () => {
  it.concurrent('--action prints one decision and exits 0', async () => {
    const r = await cli([
      'eval',
      '--policy',
      RESEARCH,
      '--action',
      '{"type":"file_read","path":"/data/research/a.csv"}',
    ]);
    expect(r.code).toBe(0);
    expect(decisions(r.stdout)).toEqual([{ effect: 'ALLOW', rule: 'allow-data-reads', reason: 'matched' }]);
  });

  it.concurrent('--action with broken JSON is a DENY line, not an error', async () => {
    const r = await cli(['eval', '--policy', RESEARCH, '--action', '{"type":']);
    expect(r.code).toBe(0);
    expect(decisions(r.stdout)).toEqual([{ effect: 'DENY', rule: null, reason: 'malformed_action' }]);
  });

  const batch = [
    '{"type":"file_read","path":"/data/research/a.csv"}',
    'not json at all',
    '',
    '{"type":"file_read","path":"/data/research/../../etc/passwd"}',
    '   ',
    '{"type":"network","url":"https://api.datasource.com/v1"}',
    '{"type":"network","url":"https://api.datasource.com/v1","addresses":["10.0.0.1"]}',
    '{"type":"teleport"}',
    '[1,2,3]',
    '{"type":"file_read","path":"/data/research/a.csv","agent":"coding-agent"}',
    '{"type":"file_read","path":"/data/research/a.csv"} trailing',
  ];
  const want = [
    { effect: 'ALLOW', rule: 'allow-data-reads', reason: 'matched' },
    { effect: 'DENY', rule: null, reason: 'malformed_action' },
    { effect: 'DENY', rule: null, reason: 'no_rule_matched' },
    { effect: 'ALLOW', rule: 'allow-api-queries', reason: 'matched' },
    { effect: 'DENY', rule: null, reason: 'malformed_action' },
    { effect: 'DENY', rule: null, reason: 'unknown_action_type' },
    { effect: 'DENY', rule: null, reason: 'malformed_action' },
    { effect: 'DENY', rule: null, reason: 'identity_mismatch' },
    { effect: 'DENY', rule: null, reason: 'malformed_action' },
  ];

  it.concurrent('--actions FILE answers every non-blank line in order, malformed lines included', async () => {
    const file = join(dir, 'actions.jsonl');
    await writeFile(file, `${batch.join('\n')}\n`);
    const r = await cli(['eval', '--policy', RESEARCH, '--actions', file]);
    expect(r.code).toBe(0);
    expect(decisions(r.stdout)).toEqual(want);
  });

  it.concurrent('--actions - reads stdin, CRLF line ends too', async () => {
    const r = await cli(['eval', '--policy', RESEARCH, '--actions', '-'], batch.join('\r\n'));
    expect(r.code).toBe(0);
    expect(decisions(r.stdout)).toEqual(want);
  });

  // JSON leaves U+2028/U+2029 raw inside strings; readline split lines there, so such an action came apart.
  it.concurrent('--actions splits at line feeds only: U+2028 and U+2029 inside an action keep it one line', async () => {
    const lines = [
      '{"type":"file_read","path":"/data/research/a\u2028b.csv"}',
      '{"type":"file_read","path":"/etc/x\u2029y"}',
    ];
    const r = await cli(['eval', '--policy', RESEARCH, '--actions', '-'], lines.join('\n'));
    expect(r.code).toBe(0);
    expect(decisions(r.stdout).map((d) => d.reason)).toEqual(['matched', 'no_rule_matched']);
  });

  it.concurrent('keeps input order over many lines', async () => {
    const many = Array.from({ length: 2000 }, (_, i) =>
      i % 3 === 0
        ? `{"type":"file_read","path":"/data/research/${i}"}`
        : i % 3 === 1
          ? `{"type":"file_read","path":"/etc/${i}"}`
          : 'x',
    );
    const r = await cli(['eval', '--policy', RESEARCH, '--actions', '-'], many.join('\n'));
    expect(r.code).toBe(0);
    const got = decisions(r.stdout).map((d) => d.reason);
    expect(got).toEqual(
      many.map((_, i) => (i % 3 === 0 ? 'matched' : i % 3 === 1 ? 'no_rule_matched' : 'malformed_action')),
    );
  });

  it.concurrent('an empty stdin prints nothing and exits 0', async () => {
    const r = await cli(['eval', '--policy', RESEARCH, '--actions', '-'], '');
    expect([r.code, r.stdout]).toEqual([0, '']);
  });

  it.concurrent('an invalid policy exits 2 with its diagnostics and decides nothing', async () => {
    const file = 'test/fixtures/policy/invalid/conditions-typo.yaml';
    const r = await cli(['eval', '--policy', file, '--action', '{"type":"file_read","path":"/data/x"}']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(lines(r.stderr)).toEqual([`${file}:6:5: rules[0]: unknown key "conditons"`]);
  });

  it.concurrent('misuse exits 2: both or neither of --action/--actions, no --policy, a missing actions file', async () => {
    const both = await cli(['eval', '--policy', RESEARCH, '--action', '{}', '--actions', '-']);
    const neither = await cli(['eval', '--policy', RESEARCH]);
    const noPolicy = await cli(['eval', '--action', '{}']);
    const missingPolicy = await cli(['eval', '--policy', join(dir, 'nope.yaml'), '--action', '{}']);
    expect([both.code, neither.code, noPolicy.code, missingPolicy.code]).toEqual([2, 2, 2, 2]);
    expect(both.stdout + neither.stdout + missingPolicy.stdout).toBe('');
    expect(missingPolicy.stderr).toContain('cannot read file (ENOENT)');
  });

  // readline re-emits the stream's ENOENT on its Interface: without a listener the CLI used to crash.
  it('a missing --actions file is a usage error (exit 2), not a crash', async () => {
    const r = await cli(['eval', '--policy', RESEARCH, '--actions', join(dir, 'nope.jsonl')]);
    expect([r.code, r.stdout]).toEqual([2, '']);
    expect(r.stderr).toMatch(/^agent-sidecar: cannot read .*nope\.jsonl: ENOENT$/m);
  });
});

describe('policy test', () => {
  it.concurrent('the shipped policy tests pass: exit 0', async () => {
    const r = await cli(['policy', 'test', 'policies/']);
    expect(r.code).toBe(0);
    expect(lines(r.stdout).filter((l) => l.startsWith('PASS '))).toHaveLength(6);
    expect(r.stdout).toMatch(/^policy tests: \d+ passed, 0 failed$/m);
  });

  it.concurrent('a failing case exits 1 and shows want and got', async () => {
    const d = join(dir, 'failing');
    await mkdir(d);
    await writeFile(join(d, 'p.yaml'), 'agent: p\nrules:\n  - { name: r, action: model, effect: ALLOW }\n');
    await writeFile(
      join(d, 'p.test.yaml'),
      'cases:\n  - { note: right, action: { type: model }, want: ALLOW }\n  - { note: wrong, action: { type: model }, want: DENY, want_rule: r }\n',
    );
    const r = await cli(['policy', 'test', d]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`FAIL ${join(d, 'p.test.yaml')} (2 cases)`);
    expect(r.stdout).toContain('  - wrong');
    expect(r.stdout).toContain('want {"effect":"DENY","rule":"r"}');
    expect(r.stdout).toContain('got  {"effect":"ALLOW","rule":"r","reason":"matched"}');
    expect(r.stdout).toMatch(/^policy tests: 1 passed, 1 failed$/m);
  });

  it.concurrent('an invalid test file or an invalid policy exits 2', async () => {
    const d = join(dir, 'broken');
    await mkdir(d);
    await writeFile(
      join(d, 'typo.test.yaml'),
      'policy: ../../x.yaml\ncases:\n  - { note: n, action: {}, wnat: DENY }\n',
    );
    const typo = await cli(['policy', 'test', join(d, 'typo.test.yaml')]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('typo.test.yaml:3:28: cases[0]: unknown key "wnat"');

    await writeFile(join(d, 'bad.yaml'), 'agent: bad\nrulez: []\n');
    await writeFile(join(d, 'bad.test.yaml'), 'cases:\n  - { note: n, action: {}, want: DENY }\n');
    const bad = await cli(['policy', 'test', join(d, 'bad.test.yaml')]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('bad.yaml:2:1: policy: unknown key "rulez"');
  });

  it.concurrent('no test files is a usage error', async () => {
    const r = await cli(['policy', 'test', 'test/fixtures/policy/invalid/']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('no policy test files');
  });
});

describe('policy schema', () => {
  let schema: Record<string, unknown>;
  let validate: (doc: unknown) => boolean;
  beforeAll(async () => {
    const r = await cli(['policy', 'schema']);
    expect(r.code).toBe(0);
    schema = JSON.parse(r.stdout) as Record<string, unknown>;
    const ajv = new Ajv2020({ allErrors: true });
    ajv.addFormat('uri', true);
    validate = ajv.compile(schema);
  });

  it('is the published docs/policy.schema.json', async () => {
    const published = JSON.parse(await readFile(join(ROOT, 'docs/policy.schema.json'), 'utf8'));
    expect(schema).toEqual(published);
    expect(schema['$schema']).toBe('https://json-schema.org/draft/2020-12/schema');
  });

  it.for(['admin', 'basic-user', 'coding-agent', 'deploy-agent', 'research-agent', 'support-agent'])(
    'accepts the shipped %s policy',
    async (name) => {
      const doc = parse(await readFile(join(ROOT, `policies/${name}.yaml`), 'utf8'));
      expect(validate(doc)).toBe(true);
    },
  );

  it('accepts the fixture that uses every operator', async () => {
    const doc = parse(await readFile(join(ROOT, 'test/fixtures/policy/valid/every-operator.yaml'), 'utf8'));
    expect(validate(doc)).toBe(true);
  });

  it.for([
    'conditions-typo.yaml',
    'unknown-top-level-key.yaml',
    'unknown-rule-key.yaml',
    'unknown-operator.yaml',
    'unknown-action.yaml',
    'unknown-effect.yaml',
    'field-not-for-action.yaml',
    'missing-agent.yaml',
    'rules-not-a-list.yaml',
    'empty-in.yaml',
    'rate-limit.yaml',
    'version.yaml',
    'wrong-types.yaml',
  ])('rejects invalid/%s', async (file) => {
    const doc = parse(await readFile(join(ROOT, 'test/fixtures/policy/invalid', file), 'utf8'));
    expect(validate(doc)).toBe(false);
  });

  it('rejects the seed policy with one typo', async () => {
    const text = (await readFile(join(ROOT, RESEARCH), 'utf8')).replace('conditions:', 'conditons:');
    expect(validate(parse(text))).toBe(false);
  });
});
