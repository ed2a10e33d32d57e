// Runs every YAML case table under cases/ (OPA style): each file names one policy, inline or as a fixture path,
// and lists actions with the decision they must get. One loader, no per-file code.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { formatDiagnostic, parseYamlWithSchema } from '../../../sidecar/policy/load.ts';
import { compilePolicy, type Policy } from '../../../sidecar/policy/policy.ts';
import {
  type PolicyTestFile,
  policyTestSchema,
  runPolicyTests,
} from '../../../sidecar/policy/policy-tests.ts';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const CASES_DIR = fileURLToPath(new URL('./cases/', import.meta.url));

type Case = PolicyTestFile['cases'][number];
interface Table {
  readonly file: string;
  readonly policy: Policy;
  readonly cases: readonly Case[];
}

/** `policy:` is inline policy text when it spans lines, otherwise a path from the repository root. */
function loadTable(file: string): Table {
  const parsed = parseYamlWithSchema(readFileSync(join(CASES_DIR, file), 'utf8'), file, policyTestSchema);
  if (!parsed.ok) throw new Error(parsed.diagnostics.map(formatDiagnostic).join('\n'));
  const ref = parsed.document.policy;
  if (ref === undefined) throw new Error(`${file}: a case table needs \`policy:\``);
  const inline = ref.includes('\n');
  const compiled = compilePolicy(
    inline ? ref : readFileSync(join(ROOT, ref), 'utf8'),
    inline ? `${file}#policy` : ref,
  );
  if (!compiled.ok) throw new Error(compiled.diagnostics.map(formatDiagnostic).join('\n'));
  return { file, policy: compiled.policy, cases: parsed.document.cases };
}

const tables = readdirSync(CASES_DIR)
  .filter((f) => f.endsWith('.yaml'))
  .sort()
  .map(loadTable);

function trustedOf(c: Case) {
  return { ...(c.claims ? { claims: c.claims } : {}), ...(c.addresses ? { addresses: c.addresses } : {}) };
}

describe.each(tables.map((t) => [t.file, t] as const))('%s', (_file, table) => {
  it('has unique notes', () => {
    const notes = table.cases.map((c) => c.note);
    expect(notes.filter((n, i) => notes.indexOf(n) !== i)).toEqual([]);
  });

  it.for(table.cases.map((c) => [c.note, c] as const))('%s', ([, c]) => {
    const got = table.policy.evaluate(c.action, trustedOf(c));
    const want = {
      effect: c.want,
      ...(c.want_rule !== undefined ? { rule: c.want_rule } : {}),
      ...(c.want_reason !== undefined ? { reason: c.want_reason } : {}),
    };
    const seen = {
      effect: got.effect,
      ...(c.want_rule !== undefined ? { rule: got.rule } : {}),
      ...(c.want_reason !== undefined ? { reason: got.reason } : {}),
    };
    expect(seen, `got ${JSON.stringify(got)}`).toEqual(want);
    // No table case may reach the evaluator's last-resort catch.
    expect(got.reason).not.toBe('internal_error');
  });

  it('agrees with `policy test` (runPolicyTests)', () => {
    const failed = runPolicyTests(table.policy, { cases: [...table.cases] }).filter((r) => !r.pass);
    expect(failed.map((r) => r.note)).toEqual([]);
  });
});

it('finds the case tables', () => {
  expect(tables.length).toBeGreaterThanOrEqual(15);
});
