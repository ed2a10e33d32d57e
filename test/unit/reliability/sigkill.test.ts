// SIGKILL of the real `agent-sidecar run` process in the middle of load: every action the agent saw answered is in
// the audit chain, the chain verifies (or names a torn tail that the restart recovers and records), and a torn tail
// written by hand is detected by `audit verify` and recovered, with its bytes kept, by the next start.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { appendFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, runCli } from '../../support/sidecar-process.ts';
import { AGENT, auditEntries, closedPort, policyText, proxied } from './harness.ts';

let dir: string;
let policyPath: string;
let auditDir: string;
let auditPath: string;
let upstream: Server;
let upstreamPort: number;
let upstreamHits = 0;
const running = new Set<RunningSidecar>();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sidecar-kill-'));
  policyPath = join(dir, 'policy.yaml');
  auditDir = join(dir, 'audit');
  auditPath = join(auditDir, `${AGENT}.audit.jsonl`);
  await writeFile(policyPath, policyText());
  upstream = createServer((_req, res) => {
    upstreamHits++;
    res.end('ok');
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upstreamPort = (upstream.address() as AddressInfo).port;
});

afterAll(async () => {
  for (const s of running) await s.stop('SIGKILL');
  upstream.closeAllConnections();
  await new Promise<void>((r) => upstream.close(() => r()));
  await rm(dir, { recursive: true, force: true });
});

interface RunningSidecar {
  readonly proc: ChildProcess;
  readonly url: string;
  /** Its stdout (JSON log lines); complete only once it has exited, since the log is buffered. */
  readonly log: () => string;
  stop(signal: NodeJS.Signals): Promise<void>;
}

/**
 * The real `agent-sidecar run` (the CLI test/support/sidecar-process.ts spawns), on a port picked here and ready
 * once /readyz answers: the operational log is buffered, so its "sidecar ready" line may not be out yet.
 */
async function start(): Promise<RunningSidecar> {
  const port = await closedPort();
  const proc = spawn(
    process.execPath,
    [
      CLI,
      'run',
      '--policy',
      policyPath,
      '--audit-dir',
      auditDir,
      '--listen',
      `127.0.0.1:${port}`,
      '--no-watch',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  proc.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  proc.stderr?.resume();
  const url = `http://127.0.0.1:${port}`;
  const s: RunningSidecar = {
    proc,
    url,
    log: () => out,
    stop: async (signal) => {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = once(proc, 'exit');
        proc.kill(signal);
        await exited;
      }
      running.delete(s);
    },
  };
  running.add(s);
  for (let i = 0; i < 300; i++) {
    if (proc.exitCode !== null) break;
    if (
      await fetch(`${url}/readyz`).then(
        (r) => r.status === 200,
        () => false,
      )
    )
      return s;
    await new Promise((r) => setTimeout(r, 20));
  }
  await s.stop('SIGKILL');
  throw new Error('the sidecar did not become ready');
}

async function kill(s: RunningSidecar): Promise<void> {
  await s.stop('SIGKILL');
}

const verify = () => runCli(['audit', 'verify', auditPath]);

interface Completed {
  readonly decisionId: string;
  readonly effect: string;
}

/** Loops of evaluations and proxied GETs until the process dies; returns what the agents saw answered. */
async function loadUntilKilled(s: RunningSidecar, killAfter: number): Promise<Completed[]> {
  const port = Number(new URL(s.url).port);
  const completed: Completed[] = [];
  let dead = false;
  const loops = Array.from({ length: 16 }, async (_, i) => {
    for (let n = 0; !dead && n < 100_000; n++) {
      try {
        if (i % 4 === 3) {
          const r = await proxied(port, `http://127.0.0.1:${upstreamPort}/k${i}-${n}`);
          const id = r.headers['x-sidecar-decision-id'];
          if (typeof id === 'string' && !r.cut)
            completed.push({ decisionId: id, effect: r.status === 200 ? 'ALLOW' : 'DENY' });
        } else {
          const path = i % 4 === 0 ? `/etc/k${n}` : `/data/k${i}-${n}`;
          const res = await fetch(`${s.url}/v1/evaluate`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ type: 'file_read', path }),
          });
          const body = (await res.json()) as { decision_id: string; effect: string };
          completed.push({ decisionId: body.decision_id, effect: body.effect });
        }
      } catch {
        // Connection refused or reset: the process is gone and this request was never answered.
        dead = true;
      }
      if (completed.length >= killAfter && !dead && running.has(s)) {
        dead = true;
        await kill(s);
      }
    }
  });
  await Promise.all(loops);
  if (running.has(s)) await kill(s);
  return completed;
}

describe('SIGKILL under load', () => {
  it('every answered action is in the chain; the chain verifies or names only a torn tail; restart recovers', async () => {
    const first = await start();
    const seen = await loadUntilKilled(first, 400);
    expect(seen.length).toBeGreaterThanOrEqual(400);

    const afterKill = await verify();
    // A kill between write() and the next line can leave a torn tail and nothing worse.
    if (afterKill.code !== 0) expect(afterKill.stderr).toMatch(/: torn: /);
    const entries = new Map((await auditEntries(auditPath).catch(() => [])).map((e) => [e.decision_id, e]));
    for (const c of seen) expect(entries.get(c.decisionId)?.effect).toBe(c.effect);
    // The upstream was only ever reached for a proxied request audited as ALLOW.
    const proxyAllows = [...entries.values()].filter(
      (e) => e.kind === 'proxy' && e.effect === 'ALLOW',
    ).length;
    expect(upstreamHits).toBeLessThanOrEqual(proxyAllows);

    const second = await start();
    const r = await fetch(`${second.url}/v1/evaluate`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"type":"file_read","path":"/data/after-restart"}',
    });
    expect(((await r.json()) as { effect: string }).effect).toBe('ALLOW');
    await second.stop('SIGTERM');
    const final = await verify();
    expect(final.stderr).toBe('');
    expect(final.code).toBe(0);
    const recoveries = (await auditEntries(auditPath)).filter((e) => e.kind === 'chain_recovery');
    expect(recoveries.length).toBe(afterKill.code === 0 ? 0 : 1);
  });

  it('a torn last line (written by hand after a kill) is reported by verify, then recovered and recorded by the restart', async () => {
    const s = await start();
    const seen = await loadUntilKilled(s, 100);
    const before = await auditEntries(auditPath);
    const last = before.at(-1);
    // Half of what the next entry would have looked like, with no newline: a write cut by the kill.
    const torn = `{"seq":${(last?.seq ?? 0) + 1},"ts":"2030-01-01T00:00:00.000Z","decision_id":"torn-by-hand","agent":"${AGENT}","kind":"evaluate","act`;
    await appendFile(auditPath, torn);

    const detected = await verify();
    expect(detected.code).toBe(1);
    expect(detected.stderr).toMatch(new RegExp(`:${before.length + 1}: torn: `));

    const restarted = await start();
    await restarted.stop('SIGTERM');
    // The operational log says so too (read after exit: it is flushed on shutdown).
    expect(restarted.log()).toContain('"msg":"audit log had a torn tail; recovered"');

    const recovered = await verify();
    expect(recovered.stderr).toBe('');
    expect(recovered.code).toBe(0);
    const after = await auditEntries(auditPath);
    const recovery = after.find((e) => e.kind === 'chain_recovery' && e.seq === before.length + 1);
    expect(recovery).toMatchObject({
      reason: 'torn_tail',
      extra: { torn_line: before.length + 1, torn_bytes: torn.length },
    });
    // The torn bytes are kept beside the log, byte for byte.
    const side = (await readdir(auditDir)).find(
      (f) => f.includes('.torn-') && f.startsWith(`${AGENT}.audit.jsonl`),
    );
    const sideFile = (recovery?.extra as { torn_file?: string } | undefined)?.torn_file;
    expect(side).toBeDefined();
    expect(await readFile(join(auditDir, sideFile ?? ''), 'utf8')).toBe(torn);
    // Nothing that had been answered was lost in the recovery.
    const ids = new Set(after.map((e) => e.decision_id));
    for (const c of seen) expect(ids.has(c.decisionId)).toBe(true);
    expect(ids.has('torn-by-hand')).toBe(false);
  });
});
