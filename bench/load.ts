// Load and soak: a real `agent-sidecar run` process (with a generated `--config` mounting the MCP and model
// gateways) under mixed traffic from many concurrent keep-alive connections, all on loopback, stopping by itself.
// Reports error rate and latency percentiles per traffic type, the sidecar's RSS and open file descriptors at start
// and end, and whether every answered decision is in an audit chain that still verifies, with the effect the
// client was told. Numbers only: nothing here passes or fails on time.
//
//   node bench/load.ts                                   # 20 s, 1,000 connections (the documented run)
//   node bench/load.ts --duration 300 --connections 1000 # the on-demand soak
//   node bench/load.ts --json result.json                # also write the numbers as JSON
//
// Traffic (shares of --connections): /v1/evaluate 30 % and plain HTTP through the forward proxy 30 % (autocannon,
// keep-alive); CONNECT tunnels 10 % (at most 200: the proxy's tunnel limit is 256) driven by a small net client,
// each tunnel carrying 20 keep-alive requests before it is closed and a new one opened; MCP 15 %: one undici client
// per connection sends `initialize` and `notifications/initialized` once, then `tools/call` to /mcp in a loop
// (4 of 7 allowed, 3 denied: a DENY rule, the default deny, a tool no upstream offers); model 15 %: one undici
// client per connection sends `POST /anthropic/v1/messages` in a loop (4 of 6 allowed, half of them streamed;
// 2 of 6 to a denied model). A denial that the policy says should happen is counted as expected, not as an error.
//
// Each upstream runs as its own child process, so none shares the load generator's event loop: a plain HTTP
// upstream for the proxy, the helpdesk MCP tool server (agents/helpdesk-tools; it verifies the signed context
// token on every call against the role's public key and its own allowlist), and the model stand-in
// (agents/model-stub; it requires the key the sidecar injects).
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
import { Client } from 'undici';
import { startHelpdeskToolServer } from '../agents/helpdesk-tools/server.ts';
import { startModelStub } from '../agents/model-stub/server.ts';
import { generateRoleKeyPair, importVerificationKeys } from '../sidecar/identity/keys.ts';
import { percentile } from './lib.ts';

const SELF = fileURLToPath(import.meta.url);
const CLI = resolve(import.meta.dirname, '../bin/agent-sidecar.js');
const ROLE_ENV = 'LOAD_ROLE';
/** The policy's agent, which is also the role the context tokens carry and the tool server's allowlist names. */
const AGENT = 'load-test';
const MAX_TUNNEL_CONNECTIONS = 200;
const REQUESTS_PER_TUNNEL = 20;
const UPSTREAM_BODY = Buffer.alloc(512, 'u');
const CLIENT_TIMEOUT_MS = 10_000;
const DECISION_HEADER = 'x-sidecar-decision-id';
/** The tools the policy allows; the tool server's own allowlist for the role is exactly these. */
const ALLOWED_TOOLS = ['query_knowledge_base', 'get_user_info'] as const;
const ALLOWED_MODEL = 'claude-haiku-4-5';
const DENIED_MODEL = 'claude-opus-4-1';

// ---- the upstreams, each run as a child process so it does not share the load generator's event loop ----

/** Parent → child: send your report. Child → parent: where it listens, and later its report. */
type FromChild = { type: 'listening'; url: string; port: number } | { type: 'report'; report: ChildReport };
interface ChildReport {
  readonly served: number;
  readonly refused?: number;
  readonly failed?: number;
  /** Decision ids (context token jti) of the tool calls the tool server ran. */
  readonly ranIds?: readonly string[];
}

function announce(msg: FromChild): void {
  process.send?.(msg);
}

function onReportRequest(report: () => ChildReport): void {
  process.on('message', (m: { type?: string }) => {
    if (m?.type === 'report') announce({ type: 'report', report: report() });
  });
  process.on('disconnect', () => process.exit(0));
}

async function serveUpstream(): Promise<void> {
  let served = 0;
  const server = createServer((req, res) => {
    served++;
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
  const { port } = server.address() as AddressInfo;
  announce({ type: 'listening', url: `http://127.0.0.1:${port}`, port });
  onReportRequest(() => ({ served }));
}

/** The helpdesk tool server with the load role's public key; counts what it ran and what it refused. */
async function serveHelpdesk(): Promise<void> {
  const publicJwk = JSON.parse(await readFile(process.env['LOAD_PUBLIC_JWK'] as string, 'utf8')) as unknown;
  let refused = 0;
  let failed = 0;
  const ranIds: string[] = [];
  const server = await startHelpdeskToolServer({
    roleKeys: new Map([[AGENT, await importVerificationKeys(publicJwk)]]),
    allowlist: { [AGENT]: ALLOWED_TOOLS },
    logger: {
      info(obj: object, msg: string) {
        if (msg === 'tool call ran') ranIds.push(String((obj as { decisionId: unknown }).decisionId));
        else if (msg === 'tool call refused') refused++;
        else failed++;
      },
      warn() {},
    },
  });
  const { port } = new URL(server.url);
  announce({ type: 'listening', url: server.url, port: Number(port) });
  onReportRequest(() => ({ served: ranIds.length + refused + failed, refused, failed, ranIds }));
}

/** The model stand-in, requiring the key the sidecar holds. Its request log is emptied every second. */
async function serveModelStub(): Promise<void> {
  const stub = await startModelStub({
    requireApiKey: process.env['LOAD_MODEL_KEY'] as string,
    recordLimit: 0,
  });
  let served = 0;
  setInterval(() => {
    served += stub.requests.length;
    stub.requests.length = 0;
  }, 1000).unref();
  announce({ type: 'listening', url: stub.url, port: stub.port });
  onReportRequest(() => ({ served: served + stub.requests.length }));
}

interface Child {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly port: number;
  report(): Promise<ChildReport>;
}

async function startChild(role: string, env: Record<string, string> = {}): Promise<Child> {
  const proc = fork(SELF, [], {
    env: { ...process.env, ...env, [ROLE_ENV]: role },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const [first] = (await once(proc, 'message')) as [FromChild];
  if (first.type !== 'listening') throw new Error(`${role} did not start`);
  return {
    proc,
    url: first.url,
    port: first.port,
    async report() {
      const reply = new Promise<ChildReport>((resolveReport) => {
        const on = (m: FromChild) => {
          if (m.type !== 'report') return;
          proc.off('message', on);
          resolveReport(m.report);
        };
        proc.on('message', on);
      });
      proc.send({ type: 'report' });
      return reply;
    },
  };
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

type Effect = 'ALLOW' | 'DENY';

/** Decision ids the clients were answered with, and the effect each answer implied (null: not implied). */
const answered = new Map<string, Effect | null>();

function answeredId(id: string | undefined, effect: Effect | null): void {
  if (id) answered.set(id, effect);
}

class Stats {
  readonly latencies: number[] = [];
  ok = 0;
  failed = 0;
  /** Answers that were a denial the policy calls for: expected, so not errors. */
  denied = 0;
  readonly statuses = new Map<string, number>();

  record(ok: boolean, ms: number, status: string, effect: Effect | null = null): void {
    if (ok) {
      this.ok++;
      if (effect === 'DENY') this.denied++;
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
      expectedDenials: this.denied,
      errors: this.failed,
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
      timeout: CLIENT_TIMEOUT_MS / 1000,
      requests,
    });
    // autocannon calls a request's onResponse synchronously just before it emits 'response' for it.
    instance.on('response', (_client, status, _bytes, ms) => {
      const ok = okStatus(status);
      stats.record(ok, ms, ok || status !== 200 ? String(status) : '200 unexpected body', lastEffect);
      lastEffect = null;
    });
    instance.on('reqError', (err) =>
      stats.record(false, 0, (err as NodeJS.ErrnoException).code ?? err.message),
    );
    instance.on('error', reject);
    instance.on('done', (r) => resolvePromise({ errors: r.errors, timeouts: r.timeouts }));
  });
}
let lastEffect: Effect | null = null;

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
    answeredId(id, ok ? 'ALLOW' : null);
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

// ---- MCP and model traffic: one undici Client (one keep-alive connection) per simulated agent ----

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
}
/** What an answer was: as expected (and with which effect), or not (and a label saying what came instead). */
interface Verdict {
  readonly ok: boolean;
  readonly effect: Effect | null;
  readonly label: string;
}
interface Call {
  readonly path: string;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly stats: Stats;
  judge(answer: Answer): Verdict;
}

function header(a: Answer, name: string): string | undefined {
  const v = a.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function parseJson(text: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(text) as unknown;
    return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

async function exchange(client: Client, call: Omit<Call, 'stats' | 'judge'>): Promise<Answer> {
  const res = await client.request({
    method: 'POST',
    path: call.path,
    headers: call.headers,
    body: call.body,
  });
  return { status: res.statusCode, headers: res.headers, text: await res.body.text() };
}

/** Runs `calls` in a loop (starting at `offset`, so the mix is spread over connections) until the deadline. */
async function callWorker(
  origin: string,
  deadline: number,
  offset: number,
  calls: readonly Call[],
  setup?: { readonly calls: readonly Omit<Call, 'stats' | 'judge'>[]; readonly stats: Stats },
): Promise<void> {
  const client = new Client(origin, {
    pipelining: 1,
    headersTimeout: CLIENT_TIMEOUT_MS,
    bodyTimeout: CLIENT_TIMEOUT_MS,
    keepAliveTimeout: 30_000,
  });
  try {
    for (const call of setup?.calls ?? []) {
      const t = performance.now();
      try {
        const a = await exchange(client, call);
        setup?.stats.record(a.status === 200 || a.status === 202, performance.now() - t, String(a.status));
      } catch (err) {
        setup?.stats.record(false, 0, (err as NodeJS.ErrnoException).code ?? 'client_error');
      }
    }
    for (let i = offset; performance.now() < deadline; i++) {
      const call = calls[i % calls.length] as Call;
      const t = performance.now();
      try {
        const a = await exchange(client, call);
        const ms = performance.now() - t;
        const v = call.judge(a);
        call.stats.record(v.ok, ms, v.label, v.effect);
        answeredId(header(a, DECISION_HEADER), v.ok ? v.effect : null);
      } catch (err) {
        call.stats.record(false, 0, (err as NodeJS.ErrnoException).code ?? 'client_error');
        await sleep(50);
      }
    }
  } finally {
    await client.close().catch(() => undefined);
  }
}

const MCP_HEADERS = {
  'content-type': 'application/json',
  accept: 'application/json, text/event-stream',
};
const MCP_VERSION = '2025-11-25';

function mcpCalls(allowed: Stats, denied: Stats): Call[] {
  const call = (name: string, args: Record<string, unknown>, allow: boolean): Call => ({
    path: '/mcp',
    headers: { ...MCP_HEADERS, 'mcp-protocol-version': MCP_VERSION },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name, arguments: args } }),
    stats: allow ? allowed : denied,
    judge(a) {
      const j = parseJson(a.text);
      if (a.status !== 200 || j === undefined) return { ok: false, effect: null, label: String(a.status) };
      const error = j['error'] as { code?: number; data?: { code?: string } } | undefined;
      const result = j['result'] as { isError?: boolean } | undefined;
      if (result !== undefined)
        return result.isError
          ? { ok: false, effect: null, label: '200 result isError' }
          : { ok: allow, effect: 'ALLOW', label: '200 result' };
      const label = `200 ${error?.code ?? '?'} ${error?.data?.code ?? ''}`.trimEnd();
      const isDenial = error?.code === -32010 && error.data?.code === 'SIDECAR_ERR_POLICY_DENIED';
      return { ok: isDenial && !allow, effect: isDenial ? 'DENY' : null, label };
    },
  });
  return [
    call('query_knowledge_base', { query: 'reset password' }, true),
    call('delete_user', { user_id: 'u-1003' }, false), // an explicit DENY rule
    call('get_user_info', { user_id: 'u-1002' }, true),
    call('list_all_tickets', { status: 'open' }, false), // offered upstream, no rule: the default deny
    call('query_knowledge_base', { query: 'refund annual plan' }, true),
    call('export_all_users', {}, false), // no upstream offers it
    call('get_user_info', { user_id: 'u-1004' }, true),
  ];
}

const MCP_SETUP = [
  {
    path: '/mcp',
    headers: MCP_HEADERS,
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: {
        protocolVersion: MCP_VERSION,
        capabilities: {},
        clientInfo: { name: 'load-agent', version: '0.0.0' },
      },
    }),
  },
  {
    path: '/mcp',
    headers: { ...MCP_HEADERS, 'mcp-protocol-version': MCP_VERSION },
    body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }),
  },
];

function modelCalls(plain: Stats, streamed: Stats, denied: Stats): Call[] {
  const tools = [
    {
      name: 'query_knowledge_base',
      input_schema: { type: 'object', properties: { query: { type: 'string' } } },
    },
    { name: 'delete_user', input_schema: { type: 'object', properties: { user_id: { type: 'string' } } } },
  ];
  const call = (model: string, stream: boolean, withTools: boolean): Call => {
    const allow = model === ALLOWED_MODEL;
    return {
      path: '/anthropic/v1/messages',
      headers: {
        'content-type': 'application/json',
        'anthropic-version': '2023-06-01',
        // A placeholder, as agents send: the sidecar removes it and injects the real key.
        'x-api-key': 'sk-placeholder',
      },
      body: JSON.stringify({
        model,
        max_tokens: 256,
        ...(stream ? { stream: true } : {}),
        ...(withTools ? { tools } : {}),
        messages: [{ role: 'user', content: 'What is the refund policy for annual plans? Answer briefly.' }],
      }),
      stats: !allow ? denied : stream ? streamed : plain,
      judge(a) {
        const code = header(a, 'x-sidecar-error-code');
        const label = `${a.status}${code ? ` ${code}` : ''}`;
        if (!allow) {
          const isDenial = a.status === 403 && code === 'SIDECAR_ERR_POLICY_DENIED';
          return { ok: isDenial, effect: isDenial ? 'DENY' : null, label };
        }
        if (a.status !== 200) return { ok: false, effect: null, label };
        const complete = stream
          ? a.text.includes('event: message_stop')
          : parseJson(a.text)?.['type'] === 'message';
        return complete
          ? { ok: true, effect: 'ALLOW', label }
          : { ok: false, effect: null, label: `${label} incomplete` };
      },
    };
  };
  return [
    call(ALLOWED_MODEL, false, true), // two tools offered, delete_user stripped
    call(ALLOWED_MODEL, true, false),
    call(DENIED_MODEL, false, false),
    call(ALLOWED_MODEL, false, false),
    call(ALLOWED_MODEL, true, true),
    call(DENIED_MODEL, true, false),
  ];
}

// ---- the sidecar process ----

/** The running sidecar, for the watchdog. */
let sidecarProc: ChildProcess | undefined;

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
async function startSidecarProcess(
  dir: string,
  policyPath: string,
  configPath: string,
  auditDir: string,
): Promise<SidecarProc> {
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
      '--config',
      configPath,
      '--audit-dir',
      auditDir,
      '--listen',
      `127.0.0.1:${port}`,
      '--no-watch',
    ],
    { stdio: ['ignore', log.fd, 'inherit'] },
  );
  proc.once('exit', () => void log.close());
  sidecarProc = proc;
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

/** The tools /mcp lists for this policy: a check that the gateway is mounted and filters before load starts. */
async function listedTools(url: string): Promise<string[]> {
  const res = await fetch(`${url}/mcp`, {
    method: 'POST',
    headers: MCP_HEADERS,
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
  });
  const j = (await res.json()) as { result?: { tools?: Array<{ name: string }> } };
  return (j.result?.tools ?? []).map((t) => t.name).sort();
}

/** Every audited decision id with the effect of its first entry, and the number of entries of each kind. */
async function readAudit(path: string) {
  const effects = new Map<string, Effect | null>();
  const kinds: Record<string, number> = {};
  let entries = 0;
  const lines = createInterface({ input: createReadStream(path) });
  for await (const line of lines) {
    if (line.trim() === '') continue;
    entries++;
    const e = JSON.parse(line) as { decision_id?: string; kind?: string; effect?: Effect | null };
    const kind = e.kind ?? '(none)';
    kinds[kind] = (kinds[kind] ?? 0) + 1;
    if (e.decision_id !== undefined && !effects.has(e.decision_id))
      effects.set(e.decision_id, e.effect ?? null);
  }
  return { effects, kinds, entries };
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

const POLICY = `agent: ${AGENT}
rules:
  - name: reads
    action: file_read
    conditions: { path: { starts_with: /data } }
    effect: ALLOW
  - name: loopback
    action: network
    conditions: { address: { in_cidr: ["127.0.0.0/8"] } }
    effect: ALLOW
  - name: no-deletes
    action: tool_call
    conditions: { tool: { equals: delete_user } }
    effect: DENY
  - name: helpdesk-reads
    action: tool_call
    conditions: { tool: { in: [${ALLOWED_TOOLS.join(', ')}] } }
    effect: ALLOW
  - name: no-large-models
    action: model
    conditions: { model: { starts_with: claude-opus } }
    effect: DENY
  - name: small-models
    action: model
    conditions: { model: { starts_with: claude-haiku } }
    effect: ALLOW
`;

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
      // The upstreams leave when the IPC channel closes with this process; the sidecar has none.
      sidecarProc?.kill('SIGKILL');
      process.exit(1);
    },
    (seconds + 120) * 1000,
  );
  watchdog.unref();

  const dir = await mkdtemp(join(tmpdir(), 'sidecar-load-'));
  const policyPath = join(dir, 'policy.yaml');
  const configPath = join(dir, 'sidecar.yaml');
  const auditDir = join(dir, 'audit');
  await writeFile(policyPath, POLICY);

  // The role's key pair, as `agent-sidecar` deployments hold it: the private JWK for the sidecar (context-token
  // signing), the public JWK for the tool server; and the model key, in a file only the sidecar reads.
  const pair = await generateRoleKeyPair();
  const privateKeyFile = join(dir, `${AGENT}.private.jwk.json`);
  const publicKeyFile = join(dir, `${AGENT}.public.jwk.json`);
  const modelKeyFile = join(dir, 'anthropic.key');
  const modelKey = `sk-load-${randomUUID()}`;
  await writeFile(privateKeyFile, JSON.stringify(pair.privateJwk), { mode: 0o600 });
  await writeFile(publicKeyFile, JSON.stringify(pair.publicJwk));
  await writeFile(modelKeyFile, modelKey, { mode: 0o600 });

  const children: Child[] = [];
  let sidecar: SidecarProc | undefined;
  try {
    const [upstream, helpdesk, modelStub] = await Promise.all([
      startChild('upstream'),
      startChild('helpdesk', { LOAD_PUBLIC_JWK: publicKeyFile }),
      startChild('model-stub', { LOAD_MODEL_KEY: modelKey }),
    ]);
    children.push(upstream, helpdesk, modelStub);
    await writeFile(
      configPath,
      `model:
  anthropic:
    upstream: ${modelStub.url}
    api_key_file: ${modelKeyFile}
  prices:
    "claude-haiku-4-5*": { input_per_mtok: 1, output_per_mtok: 5 }
mcp:
  upstreams:
    - name: helpdesk
      url: ${helpdesk.url}
  context:
    key_file: ${privateKeyFile}
`,
    );
    sidecar = await startSidecarProcess(dir, policyPath, configPath, auditDir);
    const pid = sidecar.proc.pid as number;
    const url = `http://127.0.0.1:${sidecar.port}`;
    const tools = await listedTools(url);
    if (tools.join() !== [...ALLOWED_TOOLS].sort().join())
      throw new Error(`/mcp tools/list gave [${tools.join(', ')}], expected the allowed tools`);
    const atStart = await sample(pid);

    const tunnels = Math.min(MAX_TUNNEL_CONNECTIONS, Math.round(connections * 0.1));
    const mcpConns = Math.round(connections * 0.15);
    const modelConns = Math.round(connections * 0.15);
    const evalConns = Math.round((connections - tunnels - mcpConns - modelConns) / 2);
    const proxyConns = connections - tunnels - mcpConns - modelConns - evalConns;
    const stats = {
      evaluate: new Stats(),
      proxy: new Stats(),
      connect: new Stats(),
      tunnelled: new Stats(),
      mcpSetup: new Stats(),
      mcpAllowed: new Stats(),
      mcpDenied: new Stats(),
      modelPlain: new Stats(),
      modelStreamed: new Stats(),
      modelDenied: new Stats(),
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
      onResponse: (_s: number, body: string) => {
        const effect = /"effect":"(ALLOW|DENY)"/.exec(body)?.[1] as Effect | undefined;
        // Both effects are answers; the other one than this body's is a wrong decision, so an error.
        lastEffect = effect === a.effect ? effect : null;
        answeredId(/"decision_id":"([^"]+)"/.exec(body)?.[1], effect ?? null);
      },
    }));
    const proxyRequests: AutocannonRequest[] = [
      {
        method: 'GET',
        path: `${upstream.url}/object/${randomUUID()}`,
        headers: { host: `127.0.0.1:${upstream.port}` },
        onResponse: (s, _b, _c, headers) => answeredId(headers[DECISION_HEADER], s === 200 ? 'ALLOW' : null),
      },
    ];
    const mcp = mcpCalls(stats.mcpAllowed, stats.mcpDenied);
    const model = modelCalls(stats.modelPlain, stats.modelStreamed, stats.modelDenied);

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
      `load: ${connections} connections for ${seconds} s (evaluate ${evalConns}, proxy ${proxyConns}, tunnels ${tunnels}, mcp ${mcpConns}, model ${modelConns})`,
    );
    const started = performance.now();
    const deadline = started + seconds * 1000;
    const [evalDone, proxyDone] = await Promise.all([
      cannon(url, evalConns, seconds, evalRequests, stats.evaluate, (s) => s === 200 && lastEffect !== null),
      cannon(url, proxyConns, seconds, proxyRequests, stats.proxy, (s) => s === 200),
      Promise.all(
        Array.from({ length: tunnels }, () =>
          tunnelWorker(sidecar!.port, upstream.port, deadline, stats.connect, stats.tunnelled).catch(() =>
            stats.connect.record(false, 0, 'client_error'),
          ),
        ),
      ),
      Promise.all(
        Array.from({ length: mcpConns }, (_, i) =>
          callWorker(url, deadline, i, mcp, { calls: MCP_SETUP, stats: stats.mcpSetup }),
        ),
      ),
      Promise.all(Array.from({ length: modelConns }, (_, i) => callWorker(url, deadline, i, model))),
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
    const { effects: audited, kinds, entries } = await readAudit(auditPath);
    let missing = 0;
    let wrongEffect = 0;
    for (const [id, effect] of answered) {
      if (!audited.has(id)) missing++;
      else if (effect !== null && audited.get(id) !== effect) wrongEffect++;
    }
    const [helpdeskReport, stubReport] = await Promise.all([helpdesk.report(), modelStub.report()]);
    const ranNotAllowed = (helpdeskReport.ranIds ?? []).filter((id) => audited.get(id) !== 'ALLOW').length;

    const result = {
      date: new Date().toISOString(),
      machine: {
        node: process.version,
        cpus: `${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}`,
        memGiB: Math.round(totalmem() / 2 ** 30),
      },
      command: `node bench/load.ts --duration ${seconds} --connections ${connections}`,
      connections: {
        total: connections,
        evaluate: evalConns,
        proxy: proxyConns,
        tunnels,
        mcp: mcpConns,
        model: modelConns,
      },
      seconds: Math.round(elapsed * 10) / 10,
      traffic: {
        evaluate: stats.evaluate.summary(elapsed),
        'proxy (plain HTTP)': stats.proxy.summary(elapsed),
        'CONNECT (tunnel set-up)': stats.connect.summary(elapsed),
        'through tunnels': stats.tunnelled.summary(elapsed),
        'MCP initialize + initialized': stats.mcpSetup.summary(elapsed),
        'MCP tools/call, allowed': stats.mcpAllowed.summary(elapsed),
        'MCP tools/call, denied': stats.mcpDenied.summary(elapsed),
        'model, allowed, non-streaming': stats.modelPlain.summary(elapsed),
        'model, allowed, streaming': stats.modelStreamed.summary(elapsed),
        'model, denied': stats.modelDenied.summary(elapsed),
      },
      autocannon: { evaluate: evalDone, proxy: proxyDone },
      upstreams: {
        mcpToolsListed: tools,
        toolServer: {
          ran: helpdeskReport.ranIds?.length ?? 0,
          refused: helpdeskReport.refused ?? 0,
          failed: helpdeskReport.failed ?? 0,
          ranWithoutAuditedAllow: ranNotAllowed,
        },
        modelStubCalls: stubReport.served,
      },
      sidecar: { atStart, peak, atEnd, settled: settled, exitCode },
      audit: {
        entries,
        decisionIds: audited.size,
        byKind: kinds,
        answeredDecisionIds: answered.size,
        answeredButNotAudited: missing,
        auditedWithOtherEffect: wrongEffect,
        verify: verify.out.replace(auditPath, '<agent>.audit.jsonl'),
        verifyExit: verify.code,
      },
    };
    printReport(result);
    if (values.json) await writeFile(values.json, `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    if (sidecar && sidecar.proc.exitCode === null) sidecar.proc.kill('SIGKILL');
    for (const child of children) if (child.proc.connected) child.proc.disconnect();
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
  upstreams: {
    mcpToolsListed: string[];
    toolServer: Record<string, number>;
    modelStubCalls: number;
  };
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
  out.push(
    '| traffic | requests | req/s | expected denials | errors | error rate | p50 ms | p99 ms | p99.9 ms | max ms | statuses |',
  );
  out.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |');
  for (const [name, s] of Object.entries(r.traffic)) {
    const statuses = Object.entries(s.statuses)
      .map(([k, v]) => `${k}×${v}`)
      .join(' ');
    out.push(
      `| ${name} | ${s.requests} | ${s.rps} | ${s.expectedDenials} | ${s.errors} | ${(s.errorRate * 100).toFixed(3)} % | ${ms(s.p50)} | ${ms(s.p99)} | ${ms(s.p999)} | ${ms(s.max)} | ${statuses} |`,
    );
  }
  out.push('');
  const ts = r.upstreams.toolServer;
  out.push(
    `upstreams: /mcp lists [${r.upstreams.mcpToolsListed.join(', ')}]; tool server ran ${ts['ran']} calls (context token verified), refused ${ts['refused']}, failed ${ts['failed']}, ran without an audited ALLOW ${ts['ranWithoutAuditedAllow']}; model stub answered ${r.upstreams.modelStubCalls} calls`,
  );
  const p = (k: string) => {
    const s = r.sidecar[k] as ProcSample;
    return `${s.rssMiB} MiB RSS, ${s.fds} fds`;
  };
  out.push(
    `sidecar process: start ${p('atStart')}; peak ${p('peak')}; end ${p('atEnd')}; 8 s after ${p('settled')}; SIGTERM exit ${String(r.sidecar['exitCode'])}`,
  );
  out.push(
    `audit: ${String(r.audit['entries'])} entries (${Object.entries(
      r.audit['byKind'] as Record<string, number>,
    )
      .map(([k, v]) => `${k} ${v}`)
      .join(
        ', ',
      )}), ${String(r.audit['decisionIds'])} decision ids; ${String(r.audit['answeredDecisionIds'])} answered decision ids, ${String(r.audit['answeredButNotAudited'])} of them missing from the chain, ${String(r.audit['auditedWithOtherEffect'])} audited with another effect than answered`,
  );
  out.push(`audit verify (exit ${String(r.audit['verifyExit'])}): ${String(r.audit['verify'])}`);
  console.log(out.join('\n'));
}

// Last: classes and constants above must be initialised before any role runs.
const role = process.env[ROLE_ENV];
if (role === 'upstream') await serveUpstream();
else if (role === 'helpdesk') await serveHelpdesk();
else if (role === 'model-stub') await serveModelStub();
else await main();
