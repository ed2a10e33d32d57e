// Resident memory of the real `agent-sidecar run` process: idle after start, after 20,000 evaluations over 50
// keep-alive connections, and once those connections are gone; baseline: an idle bare `node` process measured the
// same way in the same run. Numbers only.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import type { BenchRow, BenchSuite } from './lib.ts';
import { spawnSidecar } from './startup.bench.ts';

const EVALUATIONS = 20_000;
const CONNECTIONS = 50;

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

async function fdCount(pid: number): Promise<number> {
  return (await readdir(`/proc/${pid}/fd`)).length;
}

async function bareNodeRss(): Promise<number> {
  const p = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
  await sleep(500);
  const rss = await rssMiB(p.pid as number);
  p.kill();
  await once(p, 'exit');
  return rss;
}

const suite: BenchSuite = {
  name: 'memory',
  async run(): Promise<BenchRow[]> {
    const bare = await bareNodeRss();
    const s = await spawnSidecar();
    const pid = s.proc.pid as number;
    try {
      await sleep(500);
      const idle = await rssMiB(pid);
      const idleFds = await fdCount(pid);
      const pool = new Pool(s.url, { connections: CONNECTIONS });
      let next = 0;
      await Promise.all(
        Array.from({ length: CONNECTIONS }, async () => {
          while (next < EVALUATIONS) {
            const i = next++;
            const res = await pool.request({
              path: '/v1/evaluate',
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ type: 'file_read', path: i % 2 ? `/data/${i}` : `/etc/${i}` }),
            });
            await res.body.dump();
          }
        }),
      );
      const loaded = await rssMiB(pid);
      const loadedFds = await fdCount(pid);
      await pool.close();
      await sleep(1000);
      const after = await rssMiB(pid);
      const afterFds = await fdCount(pid);
      const base = { case: 'bare node, idle', value: bare };
      return [
        { case: 'bare node, idle', metric: 'RSS', value: bare, unit: 'MiB' },
        { case: 'sidecar idle after start', metric: 'RSS', value: idle, unit: 'MiB', baseline: base },
        {
          case: `sidecar after ${EVALUATIONS.toLocaleString('en-US')} evaluations (${CONNECTIONS} conns)`,
          metric: 'RSS',
          value: loaded,
          unit: 'MiB',
          baseline: base,
        },
        {
          case: 'sidecar 1 s after the connections closed',
          metric: 'RSS',
          value: after,
          unit: 'MiB',
          baseline: base,
        },
        { case: 'sidecar idle after start', metric: 'open fds', value: idleFds, unit: 'fds' },
        {
          case: `sidecar with ${CONNECTIONS} keep-alive conns open`,
          metric: 'open fds',
          value: loadedFds,
          unit: 'fds',
        },
        {
          case: 'sidecar 1 s after the connections closed',
          metric: 'open fds',
          value: afterFds,
          unit: 'fds',
        },
      ];
    } finally {
      await s.stop();
    }
  },
};

export default suite;
