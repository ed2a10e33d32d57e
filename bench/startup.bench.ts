// Start-up time of the real `agent-sidecar run` process: from spawn to ready (/readyz answers 200) and to the first
// answered /v1/evaluate, against the same-run baseline of a bare `node -e 0` process start. Numbers only.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { type BenchRow, type BenchSuite, percentile } from './lib.ts';

const CLI = resolve(import.meta.dirname, '../bin/agent-sidecar.js');
const RUNS = 10;

export const BENCH_POLICY = `agent: bench
rules:
  - name: reads
    action: file_read
    conditions: { path: { starts_with: /data } }
    effect: ALLOW
`;

export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

export interface SpawnedSidecar {
  readonly proc: ChildProcess;
  readonly url: string;
  /** ms from spawn to the first 200 from /readyz. */
  readonly readyMs: number;
  stop(): Promise<void>;
}

/** Spawns `agent-sidecar run` on a free port with its own temp policy and audit dir; resolves once ready. */
export async function spawnSidecar(): Promise<SpawnedSidecar> {
  const dir = await mkdtemp(join(tmpdir(), 'sidecar-bench-'));
  const policy = join(dir, 'policy.yaml');
  await writeFile(policy, BENCH_POLICY);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const started = performance.now();
  const proc = spawn(
    process.execPath,
    [
      CLI,
      'run',
      '--policy',
      policy,
      '--audit-dir',
      join(dir, 'audit'),
      '--listen',
      `127.0.0.1:${port}`,
      '--no-watch',
    ],
    { stdio: ['ignore', 'ignore', 'ignore'] },
  );
  const stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGTERM');
      await once(proc, 'exit');
    }
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = started + 30_000;
  while (performance.now() < deadline) {
    if (proc.exitCode !== null) break;
    const ok = await fetch(`${url}/readyz`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ok) return { proc, url, readyMs: performance.now() - started, stop };
    await sleep(2);
  }
  await stop();
  throw new Error('sidecar did not become ready within 30 s');
}

async function nodeBaseline(): Promise<number> {
  const started = performance.now();
  const p = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
  await once(p, 'exit');
  return performance.now() - started;
}

const median = (xs: number[]) => percentile(Float64Array.from(xs).sort(), 50);

const suite: BenchSuite = {
  name: 'startup',
  async run(): Promise<BenchRow[]> {
    const baseline: number[] = [];
    const ready: number[] = [];
    const first: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      baseline.push(await nodeBaseline());
      const started = performance.now();
      const s = await spawnSidecar();
      try {
        ready.push(s.readyMs);
        const res = await fetch(`${s.url}/v1/evaluate`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: '{"type":"file_read","path":"/data/first"}',
        });
        await res.json();
        first.push(performance.now() - started);
      } finally {
        await s.stop();
      }
    }
    const base = { case: 'node -e 0 (spawn to exit)', value: median(baseline) };
    return [
      { case: 'node -e 0: spawn to exit', metric: `median of ${RUNS}`, value: base.value, unit: 'ms' },
      {
        case: 'agent-sidecar run: spawn to ready (/readyz 200)',
        metric: `median of ${RUNS}`,
        value: median(ready),
        unit: 'ms',
        baseline: base,
      },
      {
        case: 'agent-sidecar run: spawn to first answered /v1/evaluate',
        metric: `median of ${RUNS}`,
        value: median(first),
        unit: 'ms',
        baseline: base,
      },
      {
        case: 'agent-sidecar run: spawn to first answered /v1/evaluate',
        metric: `max of ${RUNS}`,
        value: Math.max(...first),
        unit: 'ms',
      },
    ];
  },
};

export default suite;
