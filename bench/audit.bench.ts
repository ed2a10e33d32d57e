// Audit chain throughput: entries per second with 64 concurrent appenders, against raw appendFile of the same bytes.
import { randomUUID } from 'node:crypto';
import { appendFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { AuditChain, type AuditSyncMode } from '../sidecar/audit/chain.ts';
import type { AuditRecord } from '../sidecar/audit/entry.ts';
import { verifyAuditFile } from '../sidecar/audit/verify.ts';
import type { BenchRow, BenchSuite } from './lib.ts';

const APPENDERS = 64;
const RUN_MS = 1000;
const WARMUP_MS = 200;
const TARGET = '≥ 50,000 entries/s';

// What the proxy records for an allowed HTTPS request: a typical entry is about 900 bytes.
function record(): AuditRecord {
  return {
    decision_id: randomUUID(),
    agent: 'research',
    kind: 'proxy',
    action: {
      type: 'network',
      method: 'GET',
      url: 'https://api.github.com/repos/acme/widgets/pulls?state=open&per_page=50',
      host: 'api.github.com',
      addresses: ['140.82.112.6'],
    },
    effect: 'ALLOW',
    rule: 'github-read-only',
    reason: 'matched',
    policy_digest: '3f2a9c4e1b7d8a6f5e0c2b4d6a8f1e3c5b7d9a0e2c4f6b8d1a3e5c7f9b0d2a4c',
    extra: {
      request_headers: {
        'user-agent': 'research-agent/1.4',
        accept: 'application/json',
        authorization: 'Bearer x',
      },
      status: 200,
      bytes_in: 18_342,
      bytes_out: 412,
      duration_ms: 182,
      upstream: '140.82.112.6:443',
    },
  };
}

/** Runs `op` from `APPENDERS` loops for `ms` and returns completed operations per second. */
async function throughput(op: () => Promise<unknown>, ms: number): Promise<number> {
  let done = 0;
  const start = performance.now();
  const deadline = start + ms;
  await Promise.all(
    Array.from({ length: APPENDERS }, async () => {
      while (performance.now() < deadline) {
        await op();
        done++;
      }
    }),
  );
  return done / ((performance.now() - start) / 1000);
}

async function chainRate(root: string, sync: AuditSyncMode): Promise<{ rate: number; path: string }> {
  const chain = await AuditChain.open({ dir: join(root, sync), agent: 'research', sync });
  await throughput(() => chain.append(record()), WARMUP_MS);
  const rate = await throughput(() => chain.append(record()), RUN_MS);
  await chain.close();
  return { rate, path: chain.path };
}

const suite: BenchSuite = {
  name: 'audit',
  async run(): Promise<BenchRow[]> {
    const root = await mkdtemp(join(tmpdir(), 'audit-bench-'));
    try {
      const modes = {
        always: 'fdatasync per batch before answering',
        interval: 'fdatasync within 20 ms (default)',
        never: 'no fdatasync',
      } as const;
      const rates = [];
      for (const mode of ['always', 'interval', 'never'] as const)
        rates.push({ mode, ...(await chainRate(root, mode)) });
      const unsynced = rates[2]!;

      // The baseline writes the bytes the chain wrote, one line per call, with no hashing, batching or sync.
      const sample = (await readFile(unsynced.path, 'utf8')).split('\n', 1)[0]!;
      const line = `${sample}\n`;
      const rawPath = join(root, 'raw.jsonl');
      await throughput(() => appendFile(rawPath, line), WARMUP_MS);
      const raw = await throughput(() => appendFile(rawPath, line), RUN_MS);
      const baseline = { case: 'audit: fs.appendFile of the same bytes', value: Math.round(raw) };

      const verifyStart = performance.now();
      const verified = await verifyAuditFile(unsynced.path);
      const verifyRate = (verified.ok ? verified.count : 0) / ((performance.now() - verifyStart) / 1000);

      return [
        ...rates.map((r) => ({
          case: `audit: AuditChain, sync ${r.mode} (${modes[r.mode]}), ${APPENDERS} appenders`,
          metric: 'throughput',
          value: Math.round(r.rate),
          unit: 'entries/s',
          baseline,
          target: TARGET,
        })),
        { ...baseline, metric: 'throughput', unit: 'entries/s' },
        {
          case: 'audit: verifyAuditFile',
          metric: 'throughput',
          value: Math.round(verifyRate),
          unit: 'entries/s',
        },
      ];
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  },
};

export default suite;
