// Runs benchmark suites (bench/*.bench.ts) and prints each number beside its same-run baseline.
// Usage: npm run bench [-- <suite name>...]. Numbers only: nothing here passes or fails.
import { readdir } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import type { BenchRow, BenchSuite } from './lib.ts';

const only = process.argv.slice(2);
const files = (await readdir(import.meta.dirname)).filter((f) => f.endsWith('.bench.ts')).sort();

const fmt = (v: number) =>
  Number.isNaN(v) ? 'n/a' : Math.abs(v) >= 1000 ? Math.round(v).toLocaleString('en-US') : v.toPrecision(3);

console.log(
  `agent-sidecar benchmarks — node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${Math.round(totalmem() / 2 ** 30)} GiB`,
);
for (const file of files) {
  const suite = (await import(`./${file}`)).default as BenchSuite;
  if (only.length > 0 && !only.includes(suite.name)) continue;
  console.log(`\n## ${suite.name}`);
  let rows: BenchRow[];
  try {
    rows = await suite.run();
  } catch (err) {
    console.log(`  (suite did not run: ${err instanceof Error ? err.message : String(err)})`);
    continue;
  }
  const table = rows.map((r) => ({
    case: r.case,
    metric: r.metric,
    value: `${fmt(r.value)} ${r.unit}`,
    baseline: r.baseline ? `${fmt(r.baseline.value)} ${r.unit} (${r.baseline.case})` : '',
    target: r.target ?? '',
  }));
  const cols = ['case', 'metric', 'value', 'baseline', 'target'] as const;
  const width = Object.fromEntries(
    cols.map((c) => [c, Math.max(c.length, ...table.map((t) => t[c].length))]),
  );
  const line = (t: Record<string, string>) =>
    `  ${cols.map((c) => (t[c] ?? '').padEnd(width[c] as number)).join('  ')}`.trimEnd();
  console.log(line(Object.fromEntries(cols.map((c) => [c, c]))));
  for (const t of table) console.log(line(t));
}
