// Policy evaluation: decisions per second and per-decision latency, for the shipped policies and a 500-rule policy.
// Baseline, same run: the seed's naive matcher (string startsWith over the same rules), which is fast and unsafe.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { Policy } from '../sidecar/policy/policy.ts';
import { loadPolicy } from '../sidecar/policy-file.ts';
import { type BenchRow, type BenchSuite, percentile } from './lib.ts';

const POLICIES = join(import.meta.dirname, '../policies');
const DURATION_MS = 1500;

type Case = { action: Record<string, unknown>; trusted: { claims?: Record<string, unknown> } };

async function shippedCases(name: string, policy: Policy): Promise<Case[]> {
  try {
    const file = parse(await readFile(join(POLICIES, `${name}.test.yaml`), 'utf8')) as {
      cases: Array<{ action: unknown; claims?: Record<string, unknown> }>;
    };
    const cases = file.cases
      .filter((c) => c.action !== null && typeof c.action === 'object')
      .map((c) => ({
        action: c.action as Record<string, unknown>,
        trusted: c.claims ? { claims: c.claims } : {},
      }));
    if (cases.length > 0) return cases;
  } catch {
    // No test file: fall back to one action per rule type below.
  }
  return policy.rules.map((r) => ({ action: { type: r.action }, trusted: {} }));
}

function generatedPolicy(n: number): string {
  const rules = [];
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) {
      rules.push(
        `  - name: net-${i}\n    action: network\n    conditions:\n      url: { starts_with: "https://svc-${i}.example.com/api/v${i % 7}" }\n      method: { in: [GET, POST] }\n    effect: ALLOW`,
      );
    } else {
      rules.push(
        `  - name: tool-${i}\n    action: tool_call\n    conditions:\n      tool: { equals: "tool_${i}" }\n      args.limit: { lte: ${i} }\n    effect: ${i % 3 === 0 ? 'DENY' : 'ALLOW'}`,
      );
    }
  }
  return `agent: generated\nrules:\n${rules.join('\n')}\n`;
}

/** The seed's semantics: plain string prefixes, no normalisation. Used only as a speed baseline. */
function naiveEvaluator(policy: Policy) {
  const rules = policy.rules.map((r) => ({
    r,
    checks: Object.entries(r.conditions).map(([field, ops]) => {
      const o = ops as Record<string, unknown>;
      const key = field.startsWith('args.') ? field.slice(5) : field;
      return (a: Record<string, unknown>) => {
        const raw = field.startsWith('args.')
          ? (a['args'] as Record<string, unknown> | undefined)?.[key]
          : a[key];
        const v = String(raw);
        if (o['starts_with'] !== undefined) return v.startsWith(String(o['starts_with']));
        if (o['equals'] !== undefined) return v === String(o['equals']);
        if (o['in'] !== undefined) return (o['in'] as unknown[]).map(String).includes(v);
        return true;
      };
    }),
  }));
  return (a: Record<string, unknown>) => {
    for (const { r, checks } of rules)
      if (r.action === a['type'] && checks.every((c) => c(a))) return r.effect;
    return 'DENY';
  };
}

function measure(fn: (i: number) => unknown, n: number): { perSec: number; p50: number; p99: number } {
  for (let i = 0; i < 20_000; i++) fn(i % n); // warm up the JIT
  const samples = new Float64Array(200_000);
  let count = 0;
  const start = process.hrtime.bigint();
  const deadline = start + BigInt(DURATION_MS) * 1_000_000n;
  let now = start;
  while (now < deadline && count < samples.length) {
    const t0 = process.hrtime.bigint();
    fn(count % n);
    now = process.hrtime.bigint();
    samples[count++] = Number(now - t0) / 1000;
  }
  const sorted = samples.subarray(0, count).sort();
  // Throughput without per-call timer overhead.
  let ops = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < DURATION_MS) {
    for (let i = 0; i < 1000; i++) fn(ops++ % n);
  }
  const perSec = ops / ((performance.now() - t0) / 1000);
  return { perSec, p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
}

async function run(): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  const names = (await readdir(POLICIES))
    .filter((f) => f.endsWith('.yaml') && !f.includes('.test.'))
    .map((f) => f.slice(0, -5));
  const { compilePolicy } = await import('../sidecar/policy/policy.ts');
  const big = compilePolicy(generatedPolicy(500), 'generated-500.yaml');
  if (!big.ok) throw new Error('generated policy invalid');
  const suites: Array<{ label: string; policy: Policy; cases: Case[] }> = [];
  for (const name of names) {
    const policy = await loadPolicy(join(POLICIES, `${name}.yaml`));
    suites.push({ label: name, policy, cases: await shippedCases(name, policy) });
  }
  suites.push({
    label: 'generated 500 rules (last rule / no match)',
    policy: big.policy,
    cases: [
      {
        action: { type: 'network', url: 'https://svc-498.example.com/api/v1/items?q=1', method: 'GET' },
        trusted: {},
      },
      { action: { type: 'tool_call', tool: 'tool_499', args: { limit: 3 } }, trusted: {} },
      { action: { type: 'network', url: 'https://nowhere.example.org/', method: 'GET' }, trusted: {} },
    ],
  });
  for (const s of suites) {
    const ours = measure((i) => {
      const c = s.cases[i] as Case;
      return s.policy.evaluate(c.action, c.trusted);
    }, s.cases.length);
    const naive = naiveEvaluator(s.policy);
    const base = measure((i) => naive((s.cases[i] as Case).action), s.cases.length);
    const label = `${s.label} (${s.cases.length} actions)`;
    rows.push(
      {
        case: label,
        metric: 'throughput',
        value: ours.perSec,
        unit: 'decisions/s',
        baseline: { case: 'naive prefix', value: base.perSec },
        target: '> 500,000/s',
      },
      {
        case: label,
        metric: 'p50',
        value: ours.p50,
        unit: 'µs',
        baseline: { case: 'naive prefix', value: base.p50 },
      },
      {
        case: label,
        metric: 'p99',
        value: ours.p99,
        unit: 'µs',
        baseline: { case: 'naive prefix', value: base.p99 },
        target: '< 10 µs',
      },
    );
  }
  return rows;
}

export default { name: 'policy', run } satisfies BenchSuite;
