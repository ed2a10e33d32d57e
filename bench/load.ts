// Load and soak: a real `agent-sidecar run` process under mixed traffic from many concurrent keep-alive connections,
// all on loopback, stopping by itself. Reports error rate and latency percentiles per traffic type, the sidecar's
// RSS and open file descriptors at start and end, and whether every answered decision is in an audit chain that
// still verifies. Numbers only: nothing here passes or fails on time.
//
//   node bench/load.ts                                   # 20 s, 1,000 connections (the documented run)
//   node bench/load.ts --duration 300 --connections 1000 # the on-demand soak
//   node bench/load.ts --json result.json                # also write the numbers as JSON
//
// Traffic (shares of --connections): /v1/evaluate 45 % and plain HTTP through the forward proxy 45 % (autocannon,
// keep-alive), CONNECT tunnels 10 % (at most 200: the proxy's tunnel limit is 256) driven by a small net client,
// each tunnel carrying 20 keep-alive requests before it is closed and a new one opened. MCP tools/call and model
// requests are not driven yet: `run` cannot mount those gateways. /mcp and /anthropic are probed and reported.
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream } from 'node:fs';
import { mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { percentile } from './lib.ts';

const SELF = fileURLToPath(import.meta.url);
const CLI = resolve(import.meta.dirname, '../bin/agent-sidecar.js');
const ROLE_ENV = 'LOAD_ROLE';
const AGENT = 'load-test';
const MAX_TUNNEL_CONNECTIONS = 200;
const REQUESTS_PER_TUNNEL = 20;
const UPSTREAM_BODY = Buffer.alloc(512, 'u');

// ---- the upstream, run as a child process so it does not share the load generator's event loop ----

async function serveUpstream(): Promise<void> {
  const server = createServer((req, res) => {
    req.resume();
    res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': UPSTREAM_BODY.length,
    });
    res.end(UPSTREAM_BODY);
  });
  // The Keep-Alive hint (5 s) is what the sidecar's pool honours: idle upstream sockets close soon after the run,
  // so the settled fd count shows leaks rather than a warm pool.
  server.keepAliveTimeout = 5_000;
  server.maxRequestsPerSocket = 0;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  process.send?.({ port: (server.address() as AddressInfo).port });
  process.on('disconnect', () => process.exit(0));
}

// ---- measurement helpers ----

interface ProcSample {
  readonly rssMiB: number;
  readonly fds: number;
}

async function sample(pid: number): Promise<ProcSample> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? Number.NaN);
  const fds = (await readdir(`/proc/${pid}/fd`)).length;
  return { rssMiB: Math.round((rssKb / 1024) * 10) / 10, fds };
}

class Stats {
  readonly latencies: number[] = [];
  ok = 0;
  failed = 0;
  readonly statuses = new Map<string, number>();

  record(ok: boolean, ms: number, status: string): void {
    if (ok) {
      this.ok++;
      this.latencies.push(ms);
    } else this.failed++;
    this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
  }

  summary(seconds: number) {
    const sorted = Float64Array.from(this.latencies).sort();
    const total = this.ok + this.failed;
    return {
      requests: total,
      rps: Math.round(total / seconds),
      errorRate: total === 0 ? Number.NaN : this.failed / total,
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      p999: percentile(sorted, 99.9),
      max: sorted.length ? (sorted[sorted.length - 1] as number) : Number.NaN,
      statuses: Object.fromEntries(this.statuses),
    };
  }
}

// ---- autocannon (untyped package; the part used here, typed here) ----

interface AutocannonRequest {
  readonly method: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
  readonly onResponse?: (
    status: number,
    body: string,
    context: unknown,
    headers: Record<string, string>,
  ) => void;
}
interface AutocannonInstance {
  on(event: 'response', fn: (client: unknown, status: number, bytes: number, ms: number) => void): void;
  on(event: 'reqError', fn: (err: Error) => void): void;
  on(event: 'done', fn: (result: { errors: number; timeouts: number; duration: number }) => void): void;
  on(event: 'error', fn: (err: Error) => void): void;
  stop(): void;
}
type Autocannon = (opts: Record<string, unknown>) => AutocannonInstance;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

function cannon(
  url: string,
  connections: number,
  seconds: number,
  requests: AutocannonRequest[],
  stats: Stats,
  okStatus: (status: number) => boolean,
): Promise<{ errors: number; timeouts: number }> {
  return new Promise((resolvePromise, reject) => {
    const instance = autocannon({
      url,
      connections,
      pipelining: 1,
      duration: seconds,
      timeout: 10,
      requests,
    });
    instance.on('response', (_client, status, _bytes, ms) =>
      stats.record(okStatus(status), ms, String(status)),
    );
    instance.on('reqError', (err) =>
      stats.record(false, 0, (err as NodeJS.ErrnoException).code ?? err.message),
    );
    instance.on('error', reject);
    instance.on('done', (r) => resolvePromise({ errors: r.errors, timeouts: r.timeouts }));
  });
}

// ---- CONNECT tunnels: autocannon cannot CONNECT, so a small client drives them ----

/** Reads one HTTP/1.1 response head (and a content-length body) from a socket's byte stream. */
class ResponseReader {
  #buf: Buffer = Buffer.alloc(0);
  #waiter: (() => void) | undefined;
  #closed = false;

  constructor(socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d]);
      this.#waiter?.();
    });
    const end = () => {
      this.#closed = true;
      this.#waiter?.();
    };
    socket.on('close', end);
    socket.on('error', end);
  }

  async next(withBody: boolean): Promise<{ status: number; headers: string } | undefined> {
    for (;;) {
      const end = this.#buf.indexOf('\r\n\r\n');
      if (end >= 0) {
        const head = this.#buf.subarray(0, end).toString('latin1');
        const length = withBody ? Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0) : 0;
        if (this.#buf.length >= end + 4 + length) {
          this.#buf = this.#buf.subarray(end + 4 + length);
          return { status: Number(head.split(' ')[1]), headers: head };
        }
      }
      if (this.#closed) return undefined;
      await new Promise<void>((r) => {
        this.#waiter = r;
      });
      this.#waiter = undefined;
    }
  }
}

async function tunnelWorker(
  sidecarPort: number,
  upstreamPort: number,
  deadline: number,
  connectStats: Stats,
  innerStats: Stats,
  decisionIds: string[],
): Promise<void> {
  while (performance.now() < deadline) {
    const started = performance.now();
    const socket = connect(sidecarPort, '127.0.0.1');
    socket.setNoDelay(true);
    const reader = new ResponseReader(socket);
    socket.write(`CONNECT 127.0.0.1:${upstreamPort} HTTP/1.1\r\nhost: 127.0.0.1:${upstreamPort}\r\n\r\n`);
    const established = await reader.next(false);
    const id = /\r\nx-sidecar-decision-id:\s*(\S+)/i.exec(established?.headers ?? '')?.[1];
    const ok = established?.status === 200;
    connectStats.record(ok, performance.now() - started, String(established?.status ?? 'closed'));
    if (id) decisionIds.push(id);
    if (!ok) {
      socket.destroy();
      await sleep(50);
      continue;
    }
    for (let i = 0; i < REQUESTS_PER_TUNNEL && performance.now() < deadline; i++) {
      const t = performance.now();
      socket.write(`GET /tunnel/${i} HTTP/1.1\r\nhost: 127.0.0.1:${upstreamPort}\r\n\r\n`);
      const res = await reader.next(true);
      innerStats.record(res?.status === 200, performance.now() - t, String(res?.status ?? 'closed'));
      if (!res) break;
    }
    socket.end();
    socket.destroy();
  }
}

// ---- the sidecar process ----

interface SidecarProc {
  readonly proc: ChildProcess;
  readonly port: number;
  readonly logPath: string;
}

async function freePort(): Promise<number> {
  const server = createNetServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

/** Starts `agent-sidecar run` on a free port and waits for /readyz (the log is buffered, so it is not polled). */
async function startSidecarProcess(dir: string, policyPath: string, auditDir: string): Promise<SidecarProc> {
  const logPath = join(dir, 'sidecar.log');
  const log = await open(logPath, 'w');
  const port = await freePort();
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
    { stdio: ['ignore', log.fd, 'inherit'] },
  );
  proc.once('exit', () => void log.close());
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`sidecar exited with ${proc.exitCode}`);
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then(
      (r) => r.status === 200,
      () => false,
    );
    if (ready) return { proc, port, logPath };
    await sleep(20);
  }
  proc.kill('SIGKILL');
  throw new Error('sidecar did not become ready within 30 s');
}

async function probe(url: string, path: string, body: string): Promise<number> {
  try {
    const res = await fetch(`${url}${path}`, {
      method: 'POST',
      body,
      headers: { 'content-type': 'application/json' },
    });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

async function auditedIds(path: string): Promise<Set<string>> {
  const ids = new Set<string>();
  const lines = createInterface({ input: createReadStream(path) });
  for await (const line of lines) {
    const m = /"decision_id":"([^"]+)"/.exec(line);
    if (m) ids.add(m[1] as string);
  }
  return ids;
}

function runCli(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolvePromise) => {
    const p = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    p.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    p.on('exit', (code) => resolvePromise({ code, out: out.trim() }));
  });
}

// ---- main ----

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '20' },
      connections: { type: 'string', default: '1000' },
      json: { type: 'string' },
    },
  });
  const seconds = Number(values.duration);
  const connections = Number(values.connections);
  if (!(seconds > 0) || !(connections >= 10))
    throw new Error('--duration > 0 and --connections >= 10 required');

  // Whatever happens, this process ends: the run plus a generous margin for start-up, drain and verify.
  const watchdog = setTimeout(
    () => {
      console.error('load: watchdog fired; stopping');
      process.exit(1);
    },
    (seconds + 120) * 1000,
  );
  watchdog.unref();

  const dir = await mkdtemp(join(tmpdir(), 'sidecar-load-'));
  const policyPath = join(dir, 'policy.yaml');
  const auditDir = join(dir, 'audit');
  await writeFile(
    policyPath,
    `agent: ${AGENT}
rules:
  - name: reads
    action: file_read
    conditions: { path: { starts_with: /data } }
    effect: ALLOW
  - name: loopback
    action: network
    conditions: { address: { in_cidr: ["127.0.0.0/8"] } }
    effect: ALLOW
  - name: helpdesk-tools
    action: tool_call
    conditions: { tool: { in: [search_kb, get_ticket] } }
    effect: ALLOW
  - name: small-models
    action: model
    conditions: { model: { starts_with: claude-haiku } }
    effect: ALLOW
`,
  );

  const upstream: ChildProcess = fork(SELF, [], {
    env: { ...process.env, [ROLE_ENV]: 'upstream' },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const [{ port: upstreamPort }] = (await once(upstream, 'message')) as [{ port: number }];
  let sidecar: SidecarProc | undefined;
  try {
    sidecar = await startSidecarProcess(dir, policyPath, auditDir);
    const pid = sidecar.proc.pid as number;
    const url = `http://127.0.0.1:${sidecar.port}`;
    const gateways = {
      mcp: await probe(url, '/mcp', '{"jsonrpc":"2.0","id":1,"method":"tools/list"}'),
      model: await probe(
        url,
        '/anthropic/v1/messages',
        '{"model":"claude-haiku-4-5","max_tokens":1,"messages":[]}',
      ),
    };
    const atStart = await sample(pid);

    const tunnels = Math.min(MAX_TUNNEL_CONNECTIONS, Math.round(connections * 0.1));
    const evalConns = Math.round((connections - tunnels) / 2);
    const proxyConns = connections - tunnels - evalConns;
    const decisionIds: string[] = [];
    const stats = {
      evaluate: new Stats(),
      proxy: new Stats(),
      connect: new Stats(),
      tunnelled: new Stats(),
    };
    const idFromBody = (_s: number, body: string) => {
      const m = /"decision_id":"([^"]+)"/.exec(body);
      if (m) decisionIds.push(m[1] as string);
    };
    const idFromHeader = (_s: number, _b: string, _c: unknown, headers: Record<string, string>) => {
      const id = headers['x-sidecar-decision-id'];
      if (id) decisionIds.push(id);
    };
    const evalRequests: AutocannonRequest[] = [
      { path: '/data/report.csv', effect: 'ALLOW' },
      { path: '/etc/shadow', effect: 'DENY' },
      { path: '/data/../etc/passwd', effect: 'DENY' },
    ].map((a) => ({
      method: 'POST',
      path: '/v1/evaluate',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ type: 'file_read', path: a.path }),
      onResponse: idFromBody,
    }));
    const proxyRequests: AutocannonRequest[] = [
      {
        method: 'GET',
        path: `http://127.0.0.1:${upstreamPort}/object/${randomUUID()}`,
        headers: { host: `127.0.0.1:${upstreamPort}` },
        onResponse: idFromHeader,
      },
    ];

    let peak: ProcSample = atStart;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        await sleep(1000);
        const s = await sample(pid).catch(() => undefined);
        if (s) peak = { rssMiB: Math.max(peak.rssMiB, s.rssMiB), fds: Math.max(peak.fds, s.fds) };
      }
    })();

    console.error(
      `load: ${connections} connections for ${seconds} s (evaluate ${evalConns}, proxy ${proxyConns}, tunnels ${tunnels})`,
    );
    const started = performance.now();
    const deadline = started + seconds * 1000;
    const [evalDone, proxyDone] = await Promise.all([
      cannon(url, evalConns, seconds, evalRequests, stats.evaluate, (s) => s === 200),
      cannon(url, proxyConns, seconds, proxyRequests, stats.proxy, (s) => s === 200),
      Promise.all(
        Array.from({ length: tunnels }, () =>
          tunnelWorker(
            sidecar!.port,
            upstreamPort,
            deadline,
            stats.connect,
            stats.tunnelled,
            decisionIds,
          ).catch(() => stats.connect.record(false, 0, 'client_error')),
        ),
      ),
    ]);
    const elapsed = (performance.now() - started) / 1000;
    sampling = false;
    await sampler;
    const atEnd = await sample(pid);
    await sleep(8000);
    const settled = await sample(pid);

    sidecar.proc.kill('SIGTERM');
    const [exitCode] = (await once(sidecar.proc, 'exit')) as [number | null];
    const auditPath = join(auditDir, `${AGENT}.audit.jsonl`);
    const verify = await runCli(['audit', 'verify', auditPath]);
    const audited = await auditedIds(auditPath);
    const missing = decisionIds.filter((id) => !audited.has(id)).length;

    const result = {
      date: new Date().toISOString(),
      machine: {
        node: process.version,
        cpus: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`,
        memGiB: Math.round(totalmem() / 2 ** 30),
      },
      command: `node bench/load.ts --duration ${seconds} --connections ${connections}`,
      connections: { total: connections, evaluate: evalConns, proxy: proxyConns, tunnels },
      seconds: Math.round(elapsed * 10) / 10,
      traffic: {
        evaluate: stats.evaluate.summary(elapsed),
        'proxy (plain HTTP)': stats.proxy.summary(elapsed),
        'CONNECT (tunnel set-up)': stats.connect.summary(elapsed),
        'through tunnels': stats.tunnelled.summary(elapsed),
      },
      autocannon: { evaluate: evalDone, proxy: proxyDone },
      gateways: {
        mcp: gateways.mcp === 404 ? 'not wired into `run` (404)' : `status ${gateways.mcp}`,
        model: gateways.model === 404 ? 'not wired into `run` (404)' : `status ${gateways.model}`,
      },
      sidecar: { atStart, peak, atEnd, settled: settled, exitCode },
      audit: {
        entries: audited.size,
        answeredDecisionIds: decisionIds.length,
        answeredButNotAudited: missing,
        verify: verify.out.replace(auditPath, '<agent>.audit.jsonl'),
        verifyExit: verify.code,
      },
    };
    printReport(result);
    if (values.json) await writeFile(values.json, `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    if (sidecar && sidecar.proc.exitCode === null) sidecar.proc.kill('SIGKILL');
    upstream.disconnect();
    await rm(dir, { recursive: true, force: true });
    clearTimeout(watchdog);
  }
}

function printReport(r: {
  date: string;
  machine: { node: string; cpus: string; memGiB: number };
  command: string;
  seconds: number;
  connections: Record<string, number>;
  traffic: Record<string, ReturnType<Stats['summary']>>;
  gateways: Record<string, string>;
  sidecar: Record<string, ProcSample | number | null>;
  audit: Record<string, unknown>;
}): void {
  const ms = (v: number) => (Number.isNaN(v) ? 'n/a' : v < 10 ? v.toFixed(2) : v.toFixed(1));
  const out: string[] = [];
  out.push(`agent-sidecar load — ${r.date}`);
  out.push(`machine: ${r.machine.cpus}, ${r.machine.memGiB} GiB, node ${r.machine.node}`);
  out.push(`command: ${r.command} (ran ${r.seconds} s)`);
  out.push(
    `connections: ${Object.entries(r.connections)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  );
  out.push('');
  out.push('| traffic | requests | req/s | error rate | p50 ms | p99 ms | p99.9 ms | max ms | statuses |');
  out.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const [name, s] of Object.entries(r.traffic)) {
    const statuses = Object.entries(s.statuses)
      .map(([k, v]) => `${k}×${v}`)
      .join(' ');
    out.push(
      `| ${name} | ${s.requests} | ${s.rps} | ${(s.errorRate * 100).toFixed(3)} % | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.p999)} | ${ms(s.max)} | ${statuses} |`,
    );
  }
  out.push('');
  out.push(`gateways: MCP ${r.gateways['mcp']}; model ${r.gateways['model']}`);
  const p = (k: string) => {
    const s = r.sidecar[k] as ProcSample;
    return `${s.rssMiB} MiB RSS, ${s.fds} fds`;
  };
  out.push(
    `sidecar process: start ${p('atStart')}; peak ${p('peak')}; end ${p('atEnd')}; 8 s after ${p('settled')}; SIGTERM exit ${String(r.sidecar['exitCode'])}`,
  );
  out.push(
    `audit: ${String(r.audit['entries'])} entries; ${String(r.audit['answeredDecisionIds'])} answered decision ids, ${String(r.audit['answeredButNotAudited'])} of them missing from the chain`,
  );
  out.push(`audit verify (exit ${String(r.audit['verifyExit'])}): ${String(r.audit['verify'])}`);
  console.log(out.join('\n'));
}

// Last: classes and constants above must be initialised before either role runs.
if (process.env[ROLE_ENV] === 'upstream') {
  await serveUpstream();
} else {
  await main();
}
