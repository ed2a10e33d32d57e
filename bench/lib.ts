// Shared shape for benchmark suites: each suite returns rows, bench/run.ts prints them side by side.
// Benchmarks report numbers; they never pass or fail on time.
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type { Dispatcher } from 'undici';

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

export interface Timed {
  readonly status: number;
  /** Milliseconds from dispatch to the first body byte (NaN when the body was empty). */
  readonly firstByteMs: number;
  /** Milliseconds from dispatch to the end of the answer. */
  readonly endMs: number;
  readonly body: Buffer;
}

/**
 * One request, timed, through undici's dispatch with a handler that only timestamps and collects. Not `request()`
 * and a body stream: with those a benchmark's own client promoted most of what it allocated and paused for
 * scavenges of 9-12 ms on average, in the middle of every path's samples.
 */
export function timedDispatch(dispatcher: Dispatcher, opts: Dispatcher.DispatchOptions): Promise<Timed> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let firstByteMs = Number.NaN;
    let status = 0;
    const chunks: Buffer[] = [];
    dispatcher.dispatch(opts, {
      onRequestStart() {},
      onResponseStart(_controller, statusCode) {
        status = statusCode;
      },
      onResponseData(_controller, chunk) {
        if (Number.isNaN(firstByteMs)) firstByteMs = performance.now() - started;
        chunks.push(chunk);
      },
      onResponseEnd() {
        resolve({ status, firstByteMs, endMs: performance.now() - started, body: Buffer.concat(chunks) });
      },
      onResponseError(_controller, err) {
        reject(err);
      },
    });
  });
}
