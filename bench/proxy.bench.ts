// Forward-proxy overhead: 1 KiB keep-alive GETs over 32 connections to a loopback upstream, direct, through a bare
// undici forwarder (the ceiling for Node on this machine), through the shipped sidecar (startSidecar with the CLI's
// root logger: real SidecarEnforcer, AuditChain, metrics, canonical log line) and through squid, in the same run.
// Two loads per path: saturation (closed loop, as fast as it answers: throughput; its latency is mostly queueing,
// about connections / throughput), and a paced open loop at one offered rate below every path's saturation (latency).
// The upstream and each proxy run as separate processes so the load generator does not share their event loop.
import { type ChildProcess, execFile, fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import { chown, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { type AddressInfo, connect, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Pool } from 'undici';
import type { AuditSyncMode } from '../sidecar/audit/sync-mode.ts';
import { createRootLogger, flushLogger } from '../sidecar/cli/logger.ts';
import { startSidecar } from '../sidecar/server/sidecar.ts';
import { bareRelay, bareRequestHeaders } from './bare-relay.ts';
import { type BenchRow, type BenchSuite, percentile, stopChild } from './lib.ts';

const CONNECTIONS = 32;
const WARMUP_S = 1;
const RUN_S = 5;
/** The fixed-rate run offers this, or half the slowest path's saturated throughput if that is lower. */
const MAX_FIXED_RATE = 2_000;
const BODY = Buffer.alloc(1024, 'x');
const SELF = fileURLToPath(import.meta.url);
const ROLE_ENV = 'PROXY_BENCH_ROLE';
const DIRECT = 'proxy: direct';

// ---- child roles: this file re-runs itself as the upstream, the bare forwarder and the sidecar ----

type ToChild = { type: 'start'; upstreamPort: number; dir: string; sync: AuditSyncMode } | { type: 'memory' };
interface Memory {
  readonly rss: number;
  readonly maxRss: number;
  /** Heap in use right after a full GC: what the proxy actually retains. */
  readonly heapAfterGc?: number;
}
type FromChild = { type: 'listening'; port: number } | ({ type: 'memory' } & Memory);

function reply(msg: FromChild): void {
  process.send?.(msg);
}

function answerMemory(): void {
  const rss = process.memoryUsage().rss;
  const maxRss = process.resourceUsage().maxRSS * 1024;
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  reply({ type: 'memory', rss, maxRss, ...(gc ? { heapAfterGc: process.memoryUsage().heapUsed } : {}) });
}

async function listenLoopback(server: ReturnType<typeof createServer>): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}

async function serveUpstream(): Promise<void> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BODY.length });
    res.end(BODY);
  });
  server.keepAliveTimeout = 60_000;
  reply({ type: 'listening', port: await listenLoopback(server) });
  process.on('disconnect', () => process.exit(0));
}

/** The reference row: what forwarding alone costs in Node with undici (bare-relay.ts), one keep-alive pool per origin. */
async function serveBare(): Promise<void> {
  const pools = new Map<string, Pool>();
  const server = createServer({ keepAliveTimeout: 60_000 }, (req: IncomingMessage, res: ServerResponse) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      res.writeHead(400).end();
      return;
    }
    let pool = pools.get(url.origin);
    if (!pool) {
      pool = new Pool(url.origin, { keepAliveTimeout: 60_000 });
      pools.set(url.origin, pool);
    }
    const headers = bareRequestHeaders(req, url.host);
    const body = req.headers['content-length'] || req.headers['transfer-encoding'] ? req : null;
    pool.dispatch(
      { path: url.pathname + url.search, method: req.method ?? 'GET', headers, body },
      bareRelay(res),
    );
  });
  reply({ type: 'listening', port: await listenLoopback(server) });
  process.on('disconnect', () => process.exit(0));
}

/** The shipped sidecar, as `agent-sidecar run` assembles it, logging to this process's stdout (a file). */
async function serveSidecar(msg: Extract<ToChild, { type: 'start' }>): Promise<void> {
  const tag = `audit-${msg.sync}`;
  const policyPath = join(msg.dir, `policy-${tag}.yaml`);
  await writeFile(policyPath, policyYaml(msg.upstreamPort));
  const logger = createRootLogger();
  const sidecar = await startSidecar(
    {
      policyPath,
      listen: { host: '127.0.0.1', port: 0 },
      auditDir: join(msg.dir, tag),
      auditSync: msg.sync,
      // `run` always mounts the gateways (an empty config file mounts the model gateway only).
      gateways: {},
    },
    logger,
  );
  reply({ type: 'listening', port: sidecar.agentAddress.port });
  process.on('disconnect', () => {
    void sidecar
      .close(1_000)
      .then(() => flushLogger(logger))
      .finally(() => process.exit(0));
  });
}

const role = process.env[ROLE_ENV];
if (role === 'upstream') await serveUpstream();
if (role === 'bare') await serveBare();
if (role === 'bare' || role === 'sidecar') {
  process.on('message', (msg: ToChild) => {
    if (msg.type === 'start' && role === 'sidecar') void serveSidecar(msg);
    if (msg.type === 'memory') answerMemory();
  });
}

// ---- the parent: load generation and reporting ----

function policyYaml(upstreamPort: number): string {
  return `version: 1
agent: bench-proxy
rules:
  - name: bench-upstream
    action: network
    conditions:
      url: { starts_with: "http://127.0.0.1:${upstreamPort}/" }
      method: { equals: GET }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
`;
}

interface AutocannonResult {
  readonly duration: number;
  readonly non2xx: number;
  readonly errors: number;
  readonly timeouts: number;
}
interface AutocannonInstance {
  on(event: 'response', fn: (client: unknown, status: number, bytes: number, ms: number) => void): void;
  on(event: 'done', fn: (result: AutocannonResult) => void): void;
  on(event: 'error', fn: (err: Error) => void): void;
  stop(): void;
}
type Autocannon = (opts: Record<string, unknown>) => AutocannonInstance;
const autocannon = createRequire(import.meta.url)('autocannon') as Autocannon;

interface LoadResult {
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly ok: number;
  readonly failed: number;
}

interface Path {
  readonly name: string;
  /** The sidecar rows carry the issue's targets; the others are there to compare with. */
  readonly kind: 'direct' | 'reference' | 'sidecar' | 'squid';
  readonly port: number;
  /** The request-target: origin-form for direct, absolute-form through a proxy. */
  readonly target: string;
  /** The proxy process, for CPU time and memory; absent for direct. */
  readonly pid?: number;
  readonly memory?: () => Promise<Memory | undefined>;
}

function summarize(latencies: number[], seconds: number, failed: number): LoadResult {
  const sorted = Float64Array.from(latencies).sort();
  return {
    rps: latencies.length / seconds,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    ok: latencies.length,
    failed,
  };
}

/** Closed loop: 32 connections, each sending its next request when the last one answered. Times every response. */
function saturate(p: Path, host: string, seconds: number): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const latencies: number[] = [];
    const instance = autocannon({
      url: `http://127.0.0.1:${p.port}`,
      connections: CONNECTIONS,
      pipelining: 1,
      duration: seconds,
      timeout: 10,
      requests: [{ method: 'GET', path: p.target, headers: { host } }],
    });
    instance.on('response', (_client, status, _bytes, ms) => {
      if (status >= 200 && status < 300) latencies.push(ms);
    });
    instance.on('error', reject);
    instance.on('done', (result) =>
      resolve(summarize(latencies, result.duration, result.non2xx + result.errors + result.timeouts)),
    );
  });
}

/**
 * Open loop at `rate` requests per second over up to 32 keep-alive connections: requests leave on schedule whether
 * or not earlier ones answered (autocannon's rate limit instead sends each second's quota in a burst), so latency
 * is the path's own, plus queueing only if the path falls behind. Timed from the moment each request is dispatched.
 */
async function paced(p: Path, host: string, rate: number, seconds: number): Promise<LoadResult> {
  const pool = new Pool(`http://127.0.0.1:${p.port}`, {
    connections: CONNECTIONS,
    pipelining: 1,
    keepAliveTimeout: 60_000,
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  const latencies: number[] = [];
  let failed = 0;
  const total = Math.round(rate * seconds);
  try {
    await new Promise<void>((resolve) => {
      let sent = 0;
      let settled = 0;
      const settle = () => {
        if (++settled === total) resolve();
      };
      const send = () => {
        const t0 = performance.now();
        let status = 0;
        pool.dispatch(
          { path: p.target, method: 'GET', headers: { host } },
          {
            onRequestStart() {},
            onResponseStart(_c, statusCode) {
              status = statusCode;
            },
            onResponseData() {},
            onResponseEnd() {
              if (status >= 200 && status < 300) latencies.push(performance.now() - t0);
              else failed++;
              settle();
            },
            onResponseError() {
              failed++;
              settle();
            },
          },
        );
      };
      const start = performance.now();
      // Timers fire about once a millisecond: each tick sends whatever fell due since the last one.
      const tick = () => {
        const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1);
        while (sent < due) {
          sent++;
          send();
        }
        if (sent < total) setTimeout(tick, 1);
      };
      tick();
    });
  } finally {
    await pool.close();
  }
  return summarize(latencies, seconds, failed);
}

/** CPU time (user + system, all threads) a process has used so far, from /proc; undefined where there is none. */
async function cpuMicros(pid: number | undefined): Promise<number | undefined> {
  if (pid === undefined) return undefined;
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  // Fields after the command name, which is in parentheses and may contain spaces: utime and stime are 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  // USER_HZ is 100 on every Linux architecture Node supports.
  return Number.isFinite(ticks) ? ticks * 10_000 : undefined;
}

interface Saturated extends LoadResult {
  /** Proxy CPU time per answered request during the measured run. */
  readonly cpuPerRequest?: number;
}

async function measureSaturated(p: Path, host: string): Promise<Saturated> {
  await saturate(p, host, WARMUP_S);
  const cpu0 = await cpuMicros(p.pid);
  const r = await saturate(p, host, RUN_S);
  const cpu1 = await cpuMicros(p.pid);
  return {
    ...r,
    ...(cpu0 !== undefined && cpu1 !== undefined ? { cpuPerRequest: (cpu1 - cpu0) / r.ok } : {}),
  };
}

async function measurePaced(p: Path, host: string, rate: number): Promise<LoadResult> {
  await paced(p, host, rate, WARMUP_S);
  return paced(p, host, rate, RUN_S);
}

function startChild(roleName: string, stdout: 'ignore' | number = 'ignore'): ChildProcess {
  return fork(SELF, [], {
    env: { ...process.env, [ROLE_ENV]: roleName },
    execArgv: [...process.execArgv, '--expose-gc'],
    stdio: ['ignore', stdout, 'inherit', 'ipc'],
  });
}

function nextMessage<T extends FromChild['type']>(
  child: ChildProcess,
  type: T,
  timeoutMs = 20_000,
): Promise<Extract<FromChild, { type: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => done(new Error(`child sent no "${type}" within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onMessage = (msg: FromChild) => {
      if (msg.type === type) done(undefined, msg as Extract<FromChild, { type: T }>);
    };
    const onExit = (code: number | null) => done(new Error(`child exited (${code}) before "${type}"`));
    function done(err?: Error, msg?: Extract<FromChild, { type: T }>) {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve(msg!);
    }
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

async function childMemory(child: ChildProcess): Promise<Memory> {
  const answer = nextMessage(child, 'memory');
  child.send({ type: 'memory' } satisfies ToChild);
  return answer;
}

async function freePort(): Promise<number> {
  const server = createNetServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function waitForPort(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`exited with code ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`did not listen on ${port} within ${timeoutMs} ms`);
}

const exec = promisify(execFile);

async function squidBinary(): Promise<string> {
  for (const dir of ['/usr/sbin', '/usr/bin', '/usr/local/sbin']) {
    const path = join(dir, 'squid');
    if ((await readdir(dir).catch(() => [] as string[])).includes('squid')) return path;
  }
  if (process.getuid?.() !== 0) throw new Error('squid is not installed (apt-get install -y squid, as root)');
  try {
    await exec('apt-get', ['install', '-y', '--no-install-recommends', 'squid'], {
      timeout: 300_000,
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
    });
  } catch (err) {
    throw new Error(
      `squid is not installed and apt-get install failed: ${String((err as Error).message).split('\n')[0]}`,
    );
  }
  return '/usr/sbin/squid';
}

/** The uid and gid of a local user, from /etc/passwd. */
async function userIds(name: string): Promise<{ uid: number; gid: number } | undefined> {
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '');
  const line = passwd.split('\n').find((l) => l.startsWith(`${name}:`));
  const [, , uid, gid] = line?.split(':') ?? [];
  return uid && gid ? { uid: Number(uid), gid: Number(gid) } : undefined;
}

interface Squid {
  readonly port: number;
  readonly version: string;
  readonly child: ChildProcess;
  memory(): Promise<Memory | undefined>;
}

/** squid in the foreground on a loopback port, allowing exactly the upstream the sidecar policy allows. */
async function startSquid(dir: string, upstreamPort: number): Promise<Squid> {
  const bin = await squidBinary();
  const version =
    (await exec(bin, ['-v'])).stdout.split('\n')[0]?.replace('Squid Cache: Version ', '') ?? '?';
  const port = await freePort();
  // Run as the current user; squid refuses to keep root, so as root it drops to its packaged user.
  const asRoot = process.getuid?.() === 0;
  const conf = [
    `http_port 127.0.0.1:${port}`,
    `pid_filename ${dir}/squid.pid`,
    `cache_log ${dir}/cache.log`,
    'access_log none',
    'cache deny all',
    'cache_mem 8 MB',
    `coredump_dir ${dir}`,
    'acl bench_upstream dst 127.0.0.1/32',
    `acl bench_port port ${upstreamPort}`,
    'http_access allow bench_upstream bench_port',
    'http_access deny all',
    'shutdown_lifetime 0 seconds',
    'pinger_enable off',
    'visible_hostname bench-squid',
    'netdb_filename none',
    'logfile_rotate 0',
    ...(asRoot ? ['cache_effective_user proxy'] : []),
  ].join('\n');
  await writeFile(join(dir, 'squid.conf'), `${conf}\n`);
  if (asRoot) {
    const ids = await userIds('proxy');
    if (!ids) throw new Error('running as root and there is no "proxy" user for squid to drop to');
    for (const f of ['', 'squid.conf']) await chown(join(dir, f), ids.uid, ids.gid);
  }
  const child = spawn(bin, ['-N', '-d', '1', '-f', join(dir, 'squid.conf')], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString('utf8')).slice(-2000);
  });
  try {
    await waitForPort(port, child, 15_000);
  } catch (err) {
    child.kill('SIGKILL');
    const fatal = stderr.split('\n').find((l) => /FATAL|ERROR/.test(l));
    throw new Error(`squid did not start: ${(err as Error).message}${fatal ? ` (${fatal.trim()})` : ''}`);
  }
  return {
    port,
    version,
    child,
    memory: async () => {
      const status = await readFile(`/proc/${child.pid}/status`, 'utf8').catch(() => '');
      const kb = (key: string) =>
        Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
      return status ? { rss: kb('VmRSS') * 1024, maxRss: kb('VmHWM') * 1024 } : undefined;
    },
  };
}

async function stopSquid(squid: Squid): Promise<void> {
  if (squid.child.exitCode !== null || squid.child.signalCode !== null) return;
  const exited = once(squid.child, 'exit');
  squid.child.kill('SIGTERM');
  const timer = setTimeout(() => squid.child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

const MiB = 1024 * 1024;

function pathRows(
  p: Path,
  sat: Saturated,
  fixed: LoadResult,
  rate: number,
  base: { sat: Saturated; fixed: LoadResult; squid?: Saturated },
  memory: { idle?: Memory; after?: Memory },
): BenchRow[] {
  const proxied = p.kind !== 'direct';
  const sidecar = p.kind === 'sidecar';
  const row = (metric: string, value: number, unit: string, more: Partial<BenchRow> = {}): BenchRow => ({
    case: p.name,
    metric,
    value,
    unit,
    ...more,
  });
  const vs = (value: number) => (proxied ? { baseline: { case: DIRECT, value } } : {});
  const fixedLabel = `fixed ${rate.toLocaleString('en-US')} req/s`;
  const rows: BenchRow[] = [
    row('saturated throughput', Math.round(sat.rps), 'req/s', {
      ...vs(Math.round(base.sat.rps)),
      ...(sidecar ? { target: '>= 0.5x direct, >= squid' } : {}),
    }),
  ];
  if (proxied) rows.push(row('throughput vs direct', sat.rps / base.sat.rps, 'x'));
  if (proxied && p.kind !== 'squid' && base.squid) {
    rows.push(row('throughput vs squid', sat.rps / base.squid.rps, 'x'));
  }
  rows.push(
    row('saturated p50 (queueing)', sat.p50, 'ms', vs(base.sat.p50)),
    row('saturated p99 (queueing)', sat.p99, 'ms', vs(base.sat.p99)),
    row(`${fixedLabel}: p50`, fixed.p50, 'ms', vs(base.fixed.p50)),
    row(`${fixedLabel}: p99`, fixed.p99, 'ms', vs(base.fixed.p99)),
  );
  if (proxied) {
    rows.push(
      row(`${fixedLabel}: added p50`, fixed.p50 - base.fixed.p50, 'ms'),
      row(`${fixedLabel}: added p99`, fixed.p99 - base.fixed.p99, 'ms', sidecar ? { target: '<= 1 ms' } : {}),
    );
  }
  if (sat.cpuPerRequest !== undefined) rows.push(row('proxy CPU per request', sat.cpuPerRequest, 'µs'));
  if (memory.idle) rows.push(row('proxy RSS idle', memory.idle.rss / MiB, 'MiB'));
  if (memory.after) {
    rows.push(
      row('proxy RSS after runs', memory.after.rss / MiB, 'MiB'),
      row('proxy peak RSS', memory.after.maxRss / MiB, 'MiB'),
    );
    if (memory.after.heapAfterGc !== undefined)
      rows.push(row('proxy heap after GC', memory.after.heapAfterGc / MiB, 'MiB'));
  }
  const failed = sat.failed + fixed.failed;
  if (failed > 0) rows.push(row('non-2xx + errors', failed, 'responses'));
  return rows;
}

async function startNodeProxy(
  children: ChildProcess[],
  name: string,
  roleName: 'bare' | 'sidecar',
  start: Extract<ToChild, { type: 'start' }>,
): Promise<{ path: Path; idle: Memory }> {
  const tag = roleName === 'sidecar' ? `sidecar-${start.sync}` : 'bare';
  // The sidecar's operational log (one canonical line per request) goes where `run` sends it: stdout, here a file.
  const log = openSync(join(start.dir, `${tag}.log`), 'w');
  const child = startChild(roleName, log);
  closeSync(log);
  children.push(child);
  if (roleName === 'sidecar') child.send(start satisfies ToChild);
  const port = (await nextMessage(child, 'listening')).port;
  const idle = await childMemory(child);
  const target = `http://127.0.0.1:${start.upstreamPort}/`;
  return {
    path: {
      name,
      kind: roleName === 'sidecar' ? 'sidecar' : 'reference',
      port,
      target,
      ...(child.pid === undefined ? {} : { pid: child.pid }),
      memory: () => childMemory(child),
    },
    idle,
  };
}

const suite: BenchSuite = {
  name: 'proxy',
  async run(): Promise<BenchRow[]> {
    const dir = await mkdtemp(join(tmpdir(), 'proxy-bench-'));
    const children: ChildProcess[] = [];
    let squid: Squid | undefined;
    let squidDir: string | undefined;
    const notes: BenchRow[] = [];
    try {
      const upstream = startChild('upstream');
      children.push(upstream);
      const upstreamPort = (await nextMessage(upstream, 'listening')).port;
      const host = `127.0.0.1:${upstreamPort}`;
      const start = (sync: AuditSyncMode) =>
        ({ type: 'start', upstreamPort, dir, sync }) satisfies Extract<ToChild, { type: 'start' }>;

      const paths: Path[] = [{ name: DIRECT, kind: 'direct', port: upstreamPort, target: '/' }];
      const idle = new Map<string, Memory>();
      for (const [name, roleName, sync] of [
        ['proxy: bare undici forwarder (reference: no policy, audit or log)', 'bare', 'never'],
        ['proxy: sidecar (--audit-sync interval, the default)', 'sidecar', 'interval'],
        ['proxy: sidecar (--audit-sync always: fdatasync before forwarding)', 'sidecar', 'always'],
      ] as const) {
        const started = await startNodeProxy(children, name, roleName, start(sync));
        paths.push(started.path);
        idle.set(name, started.idle);
      }
      try {
        // Its own directory under the system tmpdir: as root, squid works in it as another user.
        squidDir = await mkdtemp(join(tmpdir(), 'proxy-bench-squid-'));
        squid = await startSquid(squidDir, upstreamPort);
        const s = squid;
        paths.push({
          name: `proxy: squid ${s.version}`,
          kind: 'squid',
          port: s.port,
          target: `http://127.0.0.1:${upstreamPort}/`,
          ...(s.child.pid === undefined ? {} : { pid: s.child.pid }),
          memory: () => s.memory(),
        });
      } catch (err) {
        notes.push({
          case: `proxy: squid (not run: ${(err as Error).message})`,
          metric: 'saturated throughput',
          value: Number.NaN,
          unit: 'req/s',
        });
      }

      const saturated = new Map<Path, Saturated>();
      for (const p of paths) saturated.set(p, await measureSaturated(p, host));
      const slowest = Math.min(...[...saturated.values()].map((r) => r.rps));
      const rate = Math.max(100, Math.min(MAX_FIXED_RATE, Math.floor(slowest / 2 / 100) * 100));
      const fixed = new Map<Path, LoadResult>();
      for (const p of paths) fixed.set(p, await measurePaced(p, host, rate));

      const direct = paths[0]!;
      const squidPath = squid ? paths.at(-1) : undefined;
      const base = {
        sat: saturated.get(direct)!,
        fixed: fixed.get(direct)!,
        ...(squidPath ? { squid: saturated.get(squidPath)! } : {}),
      };
      const rows: BenchRow[] = [];
      for (const p of paths) {
        const after = await p.memory?.();
        const before = idle.get(p.name);
        rows.push(
          ...pathRows(p, saturated.get(p)!, fixed.get(p)!, rate, base, {
            ...(before ? { idle: before } : {}),
            ...(after ? { after } : {}),
          }),
        );
      }
      rows.push(...notes, {
        case: `proxy: load (${CONNECTIONS} connections, ${RUN_S} s per run)`,
        metric: 'fixed-rate offered load',
        value: rate,
        unit: 'req/s',
      });
      return rows;
    } finally {
      if (squid) await stopSquid(squid);
      for (const child of children) await stopChild(child);
      await rm(dir, { recursive: true, force: true });
      if (squidDir) await rm(squidDir, { recursive: true, force: true });
    }
  },
};

export default suite;
