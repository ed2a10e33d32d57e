// Fuzzing the policy loader (YAML with positions, schema, compile) on random text and on documents generated from
// the schema and then damaged. Invariants: compilePolicy never throws; a refusal carries file:line:col diagnostics
// inside the text; what it accepts evaluates without throwing and the same text gives the same digest and decisions;
// and a reload of any refused text leaves the running policy in force (PolicyHolder).
// test/unit/policy/properties.test.ts generates valid policies; this file is about the invalid and hostile ones.
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { compilePolicy } from '../../../sidecar/policy/policy.ts';
import { ACTION_TYPES, EFFECTS } from '../../../sidecar/policy/types.ts';
import { createMetrics } from '../../../sidecar/server/metrics.ts';
import { PolicyHolder } from '../../../sidecar/server/policy-holder.ts';
import { tempDir } from '../reliability/harness.ts';

const RUNS = { numRuns: Number(process.env['FUZZ_RUNS'] ?? 500) };

// ---- generators ----

const CONDITION_VALUES: Record<string, fc.Arbitrary<unknown>> = {
  path: fc.constantFrom('/data', '/data/../etc', 'relative', '', '/a\u0000b', '//x/./y'),
  command: fc.constantFrom('npm test', 'rm -rf / ; echo', 'git status', '$(id)', "echo 'a"),
  url: fc.constantFrom(
    'https://api.example.com',
    'http://u:p@x.test/',
    'ftp://x/',
    'https://x.test/#f',
    'https://x.test/a%2fb',
  ),
  host: fc.constantFrom('api.example.com', '*.example.com', 'a..b', 'x y', '**'),
  method: fc.constantFrom('GET', 'get', 'G ET', ''),
  address: fc.constantFrom('10.0.0.0/8', '10.0.0.0/33', 'fd00::/8', 'not-an-ip', '::ffff:127.0.0.1/128'),
  tool: fc.constantFrom('search', '', 'constructor'),
  model: fc.constantFrom('claude-haiku-4-5', ''),
  'args.n': fc.constantFrom(1, '1', true, null, [1], { a: 1 }),
};
const OPERATORS = [
  'equals',
  'starts_with',
  'in',
  'glob',
  'in_cidr',
  'gt',
  'lt',
  'equals_claim',
  'matches',
  '',
];
const operatorBlock = fc.dictionary(
  fc.constantFrom(...OPERATORS),
  fc.oneof(
    ...Object.values(CONDITION_VALUES),
    fc.array(fc.oneof(...Object.values(CONDITION_VALUES)), { maxLength: 3 }),
  ),
  { maxKeys: 3 },
);
const conditions = fc.dictionary(
  fc.constantFrom(...Object.keys(CONDITION_VALUES), 'args.__proto__', 'args.', 'x'),
  operatorBlock,
  {
    maxKeys: 3,
  },
);
// Mostly schema-shaped rules, with every field sometimes the wrong type, missing, or unknown.
const rule = fc.record(
  {
    name: fc.oneof(fc.constantFrom('r', 'r', 'dup', ''), fc.string({ maxLength: 8 }), fc.integer()),
    action: fc.oneof(fc.constantFrom(...ACTION_TYPES), fc.constantFrom('FILE_READ', 'exec', '')),
    effect: fc.oneof(fc.constantFrom(...EFFECTS), fc.constantFrom('allow', 'PERMIT', '')),
    conditions: fc.oneof(conditions, fc.constant(null), fc.constant([])),
    rate_limit: fc.oneof(
      fc.record({ max: fc.integer({ min: -1, max: 5 }), per: fc.constantFrom('second', 'minute', 'week') }),
      fc.constant('fast'),
    ),
    extra_key: fc.constant(true),
  },
  { requiredKeys: [] },
);
const document = fc.record(
  {
    version: fc.constantFrom(1, 2, '1'),
    agent: fc.oneof(
      fc.constantFrom('fuzz', 'a b', '', '../etc', 'x'.repeat(200)),
      fc.string({ maxLength: 10 }),
    ),
    description: fc.string({ maxLength: 10 }),
    rules: fc.oneof(fc.array(rule, { maxLength: 6 }), fc.constant({}), fc.constant('none')),
    unknown: fc.constant(1),
  },
  { requiredKeys: [] },
);
const structured = document.map((d) => stringify(d));

// YAML features a policy never needs and a hostile file might use.
const HOSTILE_YAML = [
  // Billion laughs: expansion must be bounded.
  `a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\nagent: x\nrules: [*d]\n`,
  // Duplicate keys: the second `effect` must not silently win.
  'agent: x\nrules:\n  - name: r\n    action: file_read\n    effect: DENY\n    effect: ALLOW\n',
  'agent: x\nagent: y\nrules: []\n',
  // Merge keys and custom tags.
  'base: &b { action: file_read, effect: ALLOW }\nagent: x\nrules:\n  - <<: *b\n    name: r\n',
  'agent: !!binary aGVsbG8=\nrules: []\n',
  'agent: x\nrules: !custom []\n',
  // Several documents in one file.
  'agent: x\nrules: []\n---\nagent: y\nrules: []\n',
  // Deep nesting.
  `agent: x\nrules: ${'['.repeat(500)}${']'.repeat(500)}\n`,
  'agent: "\\ud800"\nrules: []\n',
];
// Encodings of the same small policy that must load, and decide, exactly like the plain one.
const PLAIN = 'agent: x\nrules:\n  - name: r\n    action: file_read\n    effect: ALLOW\n';
const SAME_POLICY = [
  `\ufeff${PLAIN}`,
  PLAIN.replaceAll('\n', '\r\n'),
  `# comment\n${PLAIN}\n\n`,
  `---\n${PLAIN}...\n`,
];
const yamlNoise = fc.string({
  unit: fc.constantFrom(
    ...'abc:-[]{}&*!|>\'"#%@`,?\n  \t01'.split(''),
    'agent',
    'rules',
    'effect: ALLOW',
    '- name: ',
  ),
  maxLength: 120,
});
const anyText = fc.oneof(
  structured,
  yamlNoise,
  fc.string({ unit: 'binary', maxLength: 200 }),
  fc.constantFrom(...HOSTILE_YAML, ...SAME_POLICY),
);

// ---- properties ----

function lineCount(text: string): number {
  return text.split(/\r\n|\r|\n/).length;
}

describe('compilePolicy on random and damaged policy text', () => {
  it('never throws; a refusal names positions inside the text; an acceptance evaluates without throwing', () => {
    fc.assert(
      fc.property(anyText, fc.jsonValue({ maxDepth: 2 }), (text, action) => {
        const r = compilePolicy(text, 'fuzz.yaml');
        if (!r.ok) {
          expect(r.diagnostics.length).toBeGreaterThan(0);
          for (const d of r.diagnostics) {
            expect(d.file).toBe('fuzz.yaml');
            expect(d.line).toBeGreaterThanOrEqual(1);
            expect(d.line).toBeLessThanOrEqual(lineCount(text) + 1);
            expect(d.col).toBeGreaterThanOrEqual(1);
            expect(typeof d.message).toBe('string');
          }
          return;
        }
        const d = r.policy.evaluate(action, {});
        expect(EFFECTS).toContain(d.effect);
      }),
      RUNS,
    );
  });

  it('the same text always compiles to the same digest and the same decisions', () => {
    fc.assert(
      fc.property(structured, fc.jsonValue({ maxDepth: 2 }), (text, action) => {
        const a = compilePolicy(text, 'a.yaml');
        const b = compilePolicy(text, 'b.yaml');
        expect(a.ok).toBe(b.ok);
        if (a.ok && b.ok) {
          expect(a.policy.digest).toBe(b.policy.digest);
          expect(a.policy.evaluate(action, {})).toEqual(b.policy.evaluate(action, {}));
        }
      }),
      RUNS,
    );
  });

  it.each(HOSTILE_YAML.map((t, i) => [i, t]))(
    'hostile YAML #%i is refused, never half-loaded',
    (_i, text) => {
      const r = compilePolicy(text, 'hostile.yaml');
      // Each of these either is not a policy or smuggles something in: none may load.
      expect(r.ok).toBe(false);
    },
  );

  it.each(SAME_POLICY.map((t, i) => [i, t]))(
    'the same policy spelled differently (#%i) loads and decides the same',
    (_i, text) => {
      const plain = compilePolicy(PLAIN, 'plain.yaml');
      const r = compilePolicy(text, 'variant.yaml');
      if (!r.ok || !plain.ok) throw new Error('both must load');
      // The digest is of the bytes (it names the file that decided); the decisions are what must not differ.
      for (const action of [
        { type: 'file_read', path: '/x' },
        { type: 'file_write', path: '/x' },
        { type: 'model' },
      ]) {
        expect(r.policy.evaluate(action, {})).toEqual(plain.policy.evaluate(action, {}));
      }
    },
  );

  it('an ALLOW never comes from a rule whose effect key was written twice', () => {
    fc.assert(
      fc.property(fc.constantFrom(...EFFECTS), fc.constantFrom(...EFFECTS), (first, second) => {
        const text = `agent: x\nrules:\n  - name: r\n    action: file_read\n    effect: ${first}\n    effect: ${second}\n`;
        expect(compilePolicy(text, 'dup.yaml').ok).toBe(false);
      }),
      { numRuns: 20 },
    );
  });
});

describe('reloading refused text (PolicyHolder)', () => {
  it('whatever the new text, a refused reload keeps the running policy and its decisions', async () => {
    const dir = await tempDir('fuzz-reload');
    const path = join(dir, 'policy.yaml');
    const good =
      'agent: fuzz\nrules:\n  - name: reads\n    action: file_read\n    conditions: { path: { starts_with: /data } }\n    effect: ALLOW\n';
    await writeFile(path, good);
    const holder = await PolicyHolder.load(path, pino({ level: 'silent' }), createMetrics());
    const digest = holder.current.digest;
    try {
      await fc.assert(
        fc.asyncProperty(anyText, async (text) => {
          await writeFile(path, text);
          const r = await holder.reload('fuzz');
          const compiled = compilePolicy(text, path);
          if (!r.ok) {
            expect(holder.current.digest).toBe(digest);
            expect(holder.current.evaluate({ type: 'file_read', path: '/data/x' }, {}).effect).toBe('ALLOW');
          } else {
            // Only a valid policy for the same agent is ever adopted.
            expect(compiled.ok && compiled.policy.agent).toBe('fuzz');
            await writeFile(path, good);
            await holder.reload('restore');
          }
        }),
        { numRuns: Math.min(RUNS.numRuns, 200) },
      );
    } finally {
      holder.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
