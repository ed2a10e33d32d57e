// Shared shape for benchmark suites: each suite returns rows, bench/run.ts prints them side by side.
// Benchmarks report numbers; they never pass or fail on time.
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';

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

/** Ends a forked child: disconnect (it exits on that), SIGKILL after 5 s if it does not. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.disconnect();
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}
