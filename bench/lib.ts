// Shared shape for benchmark suites: each suite returns rows, bench/run.ts prints them side by side.
// Benchmarks report numbers; they never pass or fail on time.

export interface BenchRow {
  /** What was measured, e.g. "policy: research-agent" or "proxy: through sidecar". */
  readonly case: string;
  readonly metric: string;
  readonly value: number;
  readonly unit: string;
  /** The same metric for the baseline measured in the same run, when there is one. */
  readonly baseline?: { readonly case: string; readonly value: number };
  /** The goal from the issue, as text (e.g. "p99 < 10 µs"). */
  readonly target?: string;
}

export interface BenchSuite {
  readonly name: string;
  run(): Promise<BenchRow[]>;
}

/** Percentile of an ascending-sorted array (nearest-rank). */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx] as number;
}
