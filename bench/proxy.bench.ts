// Forward-proxy overhead: 1 KiB keep-alive GETs from 32 connections, direct to a loopback upstream, through the
// sidecar proxy (its own process: real policy, AddressGuard, AuditChain) and through squid with the same allowlist.
// The upstream and each proxy run as separate processes so the load generator does not share their event loop.
import { type ChildProcess, execFile, fork, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { chown, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { type AddressInfo, connect, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { AuditChain } from '../sidecar/audit/chain.ts';
import { compilePolicy, type Policy } from '../sidecar/policy/policy.ts';
import type { Action, Decision } from '../sidecar/policy/types.ts';
import { AddressGuard } from '../sidecar/proxy/address-guard.ts';
import { createForwardProxy } from '../sidecar/proxy/forward-proxy.ts';
import type { DecisionRequest, Enforcer, Verdict } from '../sidecar/server/enforcer-types.ts';
import { createMetrics } from '../sidecar/server/metrics.ts';
import { type BenchRow, type BenchSuite, percentile } from './lib.ts';

const CONNECTIONS = 32;
const WARMUP_S = 1;
const RUN_S = 5;
const BODY = Buffer.alloc(1024, 'x');
const SELF = fileURLToPath(import.meta.url);
const ROLE_ENV = 'PROXY_BENCH_ROLE';
const sidecarCase = (fsync: boolean) =>
  `proxy: via sidecar (minimal enforcer, real AuditChain ${fsync ? 'with' : 'without'} fsync)`;

// ---- child roles: this file re-runs itself as the upstream and the sidecar ----

type ToChild = { type: 'start'; upstreamPort: number; dir: string; fsync: boolean } | { type: 'memory' };
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

async function serveUpstream(): Promise<void> {
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BODY.length });
    res.end(BODY);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  reply({ type: 'listening', port: (server.address() as AddressInfo).port });
  process.on('disconnect', () => process.exit(0));
}

/** Evaluate, apply the non-public address rule, audit through the real AuditChain (fail closed): what every
 * proxied request pays. Rate limits and approvals are left out; the shipped enforcer lives in sidecar/server. */
class BenchEnforcer implements Enforcer {
  readonly agent: string;
  readonly #policy: Policy;
  readonly #chain: AuditChain;

  constructor(policy: Policy, chain: AuditChain) {
    this.#policy = policy;
    this.#chain = chain;
    this.agent = policy.agent;
  }

  async decide(req: DecisionRequest): Promise<Verdict> {
    let decision: Decision = this.#policy.evaluate(req.action, req.trusted ?? {});
    const rule = decision.rule === null ? undefined : this.#policy.rule(decision.rule);
    if (decision.effect !== 'DENY' && req.nonPublicAddress && !rule?.fields.includes('address')) {
      decision = { effect: 'DENY', rule: decision.rule, reason: 'address_blocked' };
    }
    if (decision.effect === 'REQUIRE_APPROVAL') decision = { ...decision, effect: 'DENY' };
    return this.#audit(req, decision);
  }

  refuse(req: DecisionRequest, reason: string, errorCode?: Verdict['errorCode']): Promise<Verdict> {
    return this.#audit(req, { effect: 'DENY', rule: null, reason }, errorCode);
  }

  async record(): Promise<boolean> {
    return true;
  }

  async #audit(req: DecisionRequest, decision: Decision, errorCode?: Verdict['errorCode']): Promise<Verdict> {
    const decisionId = randomUUID();
    try {
      await this.#chain.append({
        decision_id: decisionId,
        agent: this.agent,
        kind: req.kind,
        action: req.action as Action,
        effect: decision.effect,
        rule: decision.rule,
        reason: decision.reason,
        policy_digest: this.#policy.digest,
        ...(req.trusted?.addresses ? { extra: { addresses: req.trusted.addresses } } : {}),
      });
    } catch {
      return {
        decisionId,
        effect: 'DENY',
        decision: { effect: 'DENY', rule: null, reason: 'audit_unavailable' },
        policyDigest: this.#policy.digest,
        errorCode: 'SIDECAR_ERR_AUDIT_WRITE_FAILED',
      };
    }
    const effect = decision.effect === 'ALLOW' ? 'ALLOW' : 'DENY';
    return {
      decisionId,
      effect,
      decision,
      policyDigest: this.#policy.digest,
      ...(effect === 'DENY' ? { errorCode: errorCode ?? 'SIDECAR_ERR_POLICY_DENIED' } : {}),
    };
  }
}

async function serveSidecar(upstreamPort: number, dir: string, fsync: boolean): Promise<void> {
  const compiled = compilePolicy(policyYaml(upstreamPort), 'bench-policy.yaml');
  if (!compiled.ok) throw new Error(compiled.diagnostics.map((d) => d.message).join('; '));
  const policy = compiled.policy;
  const chain = await AuditChain.open({ dir: join(dir, `audit-${fsync}`), agent: policy.agent, fsync });
  const server = createServer({ keepAliveTimeout: 60_000 });
  const listeners: Array<{ address: string; port: number }> = [];
  const proxy = createForwardProxy({
    enforcer: new BenchEnforcer(policy, chain),
    currentPolicy: () => policy,
    guard: new AddressGuard({ ownListeners: () => listeners }),
    // The canonical line per request is part of the cost: written asynchronously to a file, as in production.
    logger: pino(pino.destination({ dest: join(dir, `sidecar-${fsync}.log`), sync: false })).child({
      component: 'proxy',
    }),
    metrics: createMetrics(),
  });
  server.on('request', (req, res) => proxy.handleRequest(req, res));
  server.on('connect', (req, socket, head) => proxy.handleConnect(req, socket, head));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  listeners.push({ address: '127.0.0.1', port });
  reply({ type: 'listening', port });
  process.on('disconnect', () => {
    void proxy.close().finally(() => chain.close().finally(() => process.exit(0)));
  });
}

const role = process.env[ROLE_ENV];
if (role === 'upstream') await serveUpstream();
if (role === 'sidecar') {
  process.on('message', (msg: ToChild) => {
    if (msg.type === 'start') void serveSidecar(msg.upstreamPort, msg.dir, msg.fsync);
    if (msg.type === 'memory') {
      const rss = process.memoryUsage().rss;
      const maxRss = process.resourceUsage().maxRSS * 1024;
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      reply({ type: 'memory', rss, maxRss, ...(gc ? { heapAfterGc: process.memoryUsage().heapUsed } : {}) });
    }
  });
}

// ---- the parent: load generation and reporting ----

function policyYaml(upstreamPort: number): string {
  return `agent: bench-proxy
rules:
  - name: bench-upstream
    action: network
    conditions:
      url: { starts_with: "http://127.0.0.1:${upstreamPort}" }
      method: { equals: GET }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
`;
}

interface AutocannonResult {
  readonly requests: { readonly total: number };
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
  readonly failed: number;
}

/** Runs autocannon for `seconds`, timing every response itself (autocannon's histogram rounds to whole ms). */
function load(port: number, path: string, host: string, seconds: number): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const latencies: number[] = [];
    const instance = autocannon({
      url: `http://127.0.0.1:${port}`,
      connections: CONNECTIONS,
      pipelining: 1,
      duration: seconds,
      timeout: 10,
      requests: [{ method: 'GET', path, headers: { host } }],
    });
    instance.on('response', (_client, status, _bytes, ms) => {
      if (status >= 200 && status < 300) latencies.push(ms);
    });
    instance.on('error', reject);
    instance.on('done', (result) => {
      const sorted = Float64Array.from(latencies).sort();
      resolve({
        rps: latencies.length / result.duration,
        p50: percentile(sorted, 50),
        p99: percentile(sorted, 99),
        failed: result.non2xx + result.errors + result.timeouts,
      });
    });
  });
}

async function measure(port: number, path: string, host: string): Promise<LoadResult> {
  await load(port, path, host, WARMUP_S);
  return load(port, path, host, RUN_S);
}

function startChild(roleName: string): ChildProcess {
  return fork(SELF, [], {
    env: { ...process.env, [ROLE_ENV]: roleName },
    execArgv: [...process.execArgv, '--expose-gc'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
}

function nextMessage<T extends FromChild['type']>(
  child: ChildProcess,
  type: T,
  timeoutMs = 10_000,
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

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.disconnect();
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
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
  rss(): Promise<{ rss: number; maxRss: number } | undefined>;
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
    rss: async () => {
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

function proxiedRows(
  name: string,
  r: LoadResult,
  direct: LoadResult,
  memory?: { idle?: Memory; after: Memory },
): BenchRow[] {
  const base = (value: number) => ({ case: 'proxy: direct', value });
  const row = (metric: string, value: number, unit: string): BenchRow => ({
    case: name,
    metric,
    value,
    unit,
  });
  return [
    { ...row('throughput', Math.round(r.rps), 'req/s'), baseline: base(Math.round(direct.rps)) },
    { ...row('p50 latency', r.p50, 'ms'), baseline: base(direct.p50) },
    { ...row('p99 latency', r.p99, 'ms'), baseline: base(direct.p99) },
    row('added p50', r.p50 - direct.p50, 'ms'),
    row('added p99', r.p99 - direct.p99, 'ms'),
    ...(memory?.idle ? [row('proxy RSS idle', memory.idle.rss / MiB, 'MiB')] : []),
    ...(memory
      ? [
          row('proxy RSS after run', memory.after.rss / MiB, 'MiB'),
          row('proxy peak RSS', memory.after.maxRss / MiB, 'MiB'),
        ]
      : []),
    ...(memory?.after.heapAfterGc === undefined
      ? []
      : [row('proxy heap after GC', memory.after.heapAfterGc / MiB, 'MiB')]),
    ...(r.failed > 0 ? [row('non-2xx + errors', r.failed, 'responses')] : []),
  ];
}

async function sidecarRows(
  dir: string,
  upstreamPort: number,
  direct: LoadResult,
  fsync: boolean,
): Promise<BenchRow[]> {
  const sidecar = startChild('sidecar');
  try {
    sidecar.send({ type: 'start', upstreamPort, dir, fsync } satisfies ToChild);
    const port = (await nextMessage(sidecar, 'listening')).port;
    sidecar.send({ type: 'memory' } satisfies ToChild);
    const idle = await nextMessage(sidecar, 'memory');
    const result = await measure(port, `http://127.0.0.1:${upstreamPort}/`, `127.0.0.1:${upstreamPort}`);
    sidecar.send({ type: 'memory' } satisfies ToChild);
    const after = await nextMessage(sidecar, 'memory');
    return proxiedRows(sidecarCase(fsync), result, direct, { idle, after });
  } finally {
    await stopChild(sidecar);
  }
}

const suite: BenchSuite = {
  name: 'proxy',
  async run(): Promise<BenchRow[]> {
    const dir = await mkdtemp(join(tmpdir(), 'proxy-bench-'));
    const children: ChildProcess[] = [];
    let squid: Squid | undefined;
    let squidDir: string | undefined;
    try {
      const upstream = startChild('upstream');
      children.push(upstream);
      const upstreamPort = (await nextMessage(upstream, 'listening')).port;
      const target = `http://127.0.0.1:${upstreamPort}/`;
      const host = `127.0.0.1:${upstreamPort}`;

      const direct = await measure(upstreamPort, '/', host);
      const rows: BenchRow[] = [
        { case: 'proxy: direct', metric: 'throughput', value: Math.round(direct.rps), unit: 'req/s' },
        { case: 'proxy: direct', metric: 'p50 latency', value: direct.p50, unit: 'ms' },
        { case: 'proxy: direct', metric: 'p99 latency', value: direct.p99, unit: 'ms' },
      ];

      rows.push(...(await sidecarRows(dir, upstreamPort, direct, true)));
      rows.push(...(await sidecarRows(dir, upstreamPort, direct, false)));

      try {
        // Its own directory under the system tmpdir: as root, squid works in it as another user.
        squidDir = await mkdtemp(join(tmpdir(), 'proxy-bench-squid-'));
        squid = await startSquid(squidDir, upstreamPort);
        const viaSquid = await measure(squid.port, target, host);
        const memory = await squid.rss();
        rows.push(
          ...proxiedRows(
            `proxy: via squid ${squid.version}`,
            viaSquid,
            direct,
            memory ? { after: memory } : undefined,
          ),
        );
      } catch (err) {
        rows.push({
          case: `proxy: via squid (not run: ${(err as Error).message})`,
          metric: 'throughput',
          value: Number.NaN,
          unit: 'req/s',
        });
      }
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
