// Model gateway overhead: the same calls sent straight to the model stand-in and through a sidecar (real enforcer,
// audit chain, gateway), alternating one for one on keep-alive connections. Non-streamed latency and streamed time
// to first byte, p50/p99, and the sidecar process's CPU time per call. With the default audit mode, a bare forwarder
// (bare-relay.ts: reads the body, then relays; no policy, parsing or audit) joins the alternation: what one more
// process and loopback hop costs any gateway on this machine. The stand-in, the forwarder and each sidecar run as
// their own processes, so the client shares no event loop.
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { Client } from 'undici';
import { startModelStub } from '../agents/model-stub/server.ts';
import type { AuditSyncMode } from '../sidecar/audit/chain.ts';
import { logDestination } from '../sidecar/cli/logger.ts';
import { createModelGateway } from '../sidecar/model/gateway.ts';
import { startSidecar } from '../sidecar/server/sidecar.ts';
import { serveBareForwarder } from './bare-relay.ts';
import { type BenchRow, type BenchSuite, percentile, stopChild, timedDispatch } from './lib.ts';

const SELF = fileURLToPath(import.meta.url);
const ROLE_ENV = 'MODEL_BENCH_ROLE';
const KEY = 'sk-bench-key';
const WARMUP = 300;
const SAMPLES = 5000;

type ToChild =
  | { type: 'start'; upstream: string; dir: string; sync: AuditSyncMode }
  | { type: 'bare'; upstream: string }
  | { type: 'cpu' };
type FromChild = { type: 'ready' } | { type: 'listening'; url: string } | { type: 'cpu'; micros: number };

function reply(msg: FromChild): void {
  process.send?.(msg);
}

async function serveStub(): Promise<void> {
  const stub = await startModelStub({ requireApiKey: KEY, recordLimit: 0 });
  reply({ type: 'listening', url: stub.url });
  process.on('disconnect', () => void stub.close().finally(() => process.exit(0)));
}

async function serveSidecar(msg: Extract<ToChild, { type: 'start' }>): Promise<void> {
  const policyPath = join(msg.dir, `policy-${msg.sync}.yaml`);
  await writeFile(
    policyPath,
    `agent: bench-model-${msg.sync}
rules:
  - name: stub
    action: model
    conditions: { model: { equals: stub-small } }
    effect: ALLOW
  - name: kb
    action: tool_call
    conditions: { tool: { equals: query_knowledge_base } }
    effect: ALLOW
budgets:
  - { name: daily, period: day, max_tokens: 1000000000000 }
`,
  );
  const auditDir = join(msg.dir, `audit-${msg.sync}`);
  // The canonical line per call is part of the cost: the sidecar's own log destination, pointed at a file.
  const logger = pino(logDestination(join(msg.dir, `sidecar-${msg.sync}.log`)));
  const sidecar = await startSidecar(
    {
      policyPath,
      listen: { host: '127.0.0.1', port: 0 },
      auditDir,
      auditSync: msg.sync,
      watchPolicy: false,
      mounts: async (parts) =>
        (
          await createModelGateway({
            config: {
              anthropic: { upstream: msg.upstream, api_key_env: 'BENCH_KEY' },
              openai: { upstream: msg.upstream, api_key_env: 'BENCH_KEY' },
              prices: { 'stub-small': { input_per_mtok: 1, output_per_mtok: 5 } },
            },
            parts,
            auditDir,
            env: { BENCH_KEY: KEY },
          })
        ).routes,
    },
    logger,
  );
  reply({ type: 'listening', url: `http://127.0.0.1:${sidecar.agentAddress.port}` });
  process.on('disconnect', () => void sidecar.close(100).finally(() => process.exit(0)));
}

/** The reference forwarder: `/anthropic/...` and `/openai/...` to the stand-in, the body read whole first. */
async function serveBare(upstream: string): Promise<void> {
  const port = await serveBareForwarder(upstream, (target) => target.replace(/^\/(anthropic|openai)/, ''));
  reply({ type: 'listening', url: `http://127.0.0.1:${port}` });
  process.on('disconnect', () => process.exit(0));
}

const role = process.env[ROLE_ENV];
if (role === 'stub') await serveStub();
if (role === 'server') {
  process.on('message', (msg: ToChild) => {
    if (msg.type === 'start') void serveSidecar(msg);
    if (msg.type === 'bare') void serveBare(msg.upstream);
    if (msg.type === 'cpu') {
      const { user, system } = process.cpuUsage();
      reply({ type: 'cpu', micros: user + system });
    }
  });
  // Only now is anyone listening for the start message.
  reply({ type: 'ready' });
}

// ---- the parent ----

interface Scenario {
  readonly name: string;
  readonly path: (base: 'direct' | 'sidecar') => string;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly stream: boolean;
}

const messages = [
  { role: 'user', content: 'What is the refund policy for annual plans? Please answer briefly.' },
];
const tools = [
  { name: 'query_knowledge_base', input_schema: { type: 'object', properties: { q: { type: 'string' } } } },
  { name: 'delete_user', input_schema: { type: 'object', properties: { id: { type: 'string' } } } },
];
const anthropicHeaders = {
  'content-type': 'application/json',
  'anthropic-version': '2023-06-01',
  'x-api-key': KEY,
};
const SCENARIOS: readonly Scenario[] = [
  {
    name: 'anthropic non-streaming (2 tools, 1 stripped)',
    path: (b) => (b === 'direct' ? '/v1/messages' : '/anthropic/v1/messages'),
    headers: anthropicHeaders,
    body: JSON.stringify({ model: 'stub-small', max_tokens: 256, tools, messages }),
    stream: false,
  },
  {
    name: 'anthropic streaming',
    path: (b) => (b === 'direct' ? '/v1/messages' : '/anthropic/v1/messages'),
    headers: anthropicHeaders,
    body: JSON.stringify({ model: 'stub-small', max_tokens: 256, stream: true, messages }),
    stream: true,
  },
  {
    name: 'openai streaming (usage chunk injected and stripped)',
    path: (b) => (b === 'direct' ? '/v1/chat/completions' : '/openai/v1/chat/completions'),
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    // The direct call asks for usage itself, so both sides produce and parse the same chunks.
    body: JSON.stringify({ model: 'stub-small', max_tokens: 256, stream: true, messages }),
    stream: true,
  },
];

/** Milliseconds until the whole answer (non-streamed) or its first body byte (streamed). */
async function once(client: Client, path: string, s: Scenario, body: string): Promise<number> {
  const t = await timedDispatch(client, { path, method: 'POST', headers: s.headers, body });
  if (t.status !== 200) throw new Error(`${path}: status ${t.status}: ${t.body.toString()}`);
  return s.stream ? t.firstByteMs : t.endMs;
}

/** What the direct call sends: a direct OpenAI stream asks for usage itself, as the sidecar does for the agent. */
function directBody(s: Scenario): string {
  return s.path('direct').includes('chat') && s.stream
    ? JSON.stringify({ ...JSON.parse(s.body), stream_options: { include_usage: true } })
    : s.body;
}

function startChild(roleName: string): ChildProcess {
  return fork(SELF, [], {
    env: { ...process.env, [ROLE_ENV]: roleName },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
}

function next<T extends FromChild['type']>(
  child: ChildProcess,
  type: T,
  timeoutMs = 15_000,
): Promise<Extract<FromChild, { type: T }>> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child sent no ${type}`)), timeoutMs);
    const onMessage = (msg: FromChild) => {
      if (msg.type !== type) return;
      clearTimeout(timer);
      child.off('message', onMessage);
      resolve(msg as Extract<FromChild, { type: T }>);
    };
    child.on('message', onMessage);
    child.once('exit', (code) => reject(new Error(`child exited ${code}`)));
  });
}

async function cpuMicros(child: ChildProcess): Promise<number> {
  const answer = next(child, 'cpu');
  child.send({ type: 'cpu' } satisfies ToChild);
  return (await answer).micros;
}

/** p50 and p99 of `samples` against the direct ones: the latency rows and the added rows. */
function latencyRows(
  name: string,
  metric: string,
  samples: number[],
  direct: Float64Array,
  target: boolean,
): BenchRow[] {
  const sorted = Float64Array.from(samples).sort();
  const rows: BenchRow[] = [];
  for (const p of [50, 99]) {
    const base = percentile(direct, p);
    const value = percentile(sorted, p);
    rows.push({
      case: name,
      metric: `${metric} p${p}`,
      value,
      unit: 'ms',
      baseline: { case: 'direct', value: base },
    });
    rows.push({
      case: name,
      metric: `added p${p}`,
      value: value - base,
      unit: 'ms',
      ...(target ? { target: p === 50 ? '≤ 1 ms' : '≤ 2 ms' } : {}),
    });
  }
  return rows;
}

async function startServer(
  msg: ToChild,
  children: ChildProcess[],
): Promise<{ child: ChildProcess; url: string }> {
  const child = startChild('server');
  children.push(child);
  await next(child, 'ready');
  const started = next(child, 'listening');
  child.send(msg);
  return { child, url: (await started).url };
}

const BARE = 'via bare Node forwarder (reference: no policy, parsing or audit)';

const suite: BenchSuite = {
  name: 'model',
  async run(): Promise<BenchRow[]> {
    const dir = await mkdtemp(join(tmpdir(), 'model-bench-'));
    const children: ChildProcess[] = [];
    const clients: Client[] = [];
    try {
      const stub = startChild('stub');
      children.push(stub);
      const stubUrl = (await next(stub, 'listening')).url;
      const direct = new Client(stubUrl, { pipelining: 1 });
      clients.push(direct);
      const rows: BenchRow[] = [];
      // One sidecar at a time, so the two never compete for the CPU. The bare forwarder joins the default's run.
      for (const sync of ['interval', 'always'] as const) {
        const sidecar = await startServer({ type: 'start', upstream: stubUrl, dir, sync }, children);
        const bare =
          sync === 'interval' ? await startServer({ type: 'bare', upstream: stubUrl }, children) : undefined;
        const label = `audit sync ${sync}${sync === 'interval' ? ', the default' : ''}`;
        const via = new Client(sidecar.url, { pipelining: 1 });
        const viaBare = bare && new Client(bare.url, { pipelining: 1 });
        clients.push(via, ...(viaBare ? [viaBare] : []));
        for (const s of SCENARIOS) {
          const sendDirect = directBody(s);
          const d: number[] = [];
          const v: number[] = [];
          const b: number[] = [];
          const cpuBefore = { sidecar: 0, bare: 0 };
          // Alternating call for call keeps every path under the same machine conditions.
          for (let i = 0; i < WARMUP + SAMPLES; i++) {
            if (i === WARMUP) {
              cpuBefore.sidecar = await cpuMicros(sidecar.child);
              if (bare) cpuBefore.bare = await cpuMicros(bare.child);
            }
            const tDirect = await once(direct, s.path('direct'), s, sendDirect);
            const tBare = viaBare ? await once(viaBare, s.path('sidecar'), s, s.body) : 0;
            const tVia = await once(via, s.path('sidecar'), s, s.body);
            if (i >= WARMUP) {
              d.push(tDirect);
              b.push(tBare);
              v.push(tVia);
            }
          }
          const ds = Float64Array.from(d).sort();
          const metric = s.stream ? 'time to first byte' : 'latency';
          rows.push(...latencyRows(`model: ${s.name}, via sidecar (${label})`, metric, v, ds, true));
          // Unlike latency, barely moved by other load on the machine (user + system, all of the process's threads).
          rows.push({
            case: `model: ${s.name}, sidecar process (${label})`,
            metric: 'CPU per call',
            value: ((await cpuMicros(sidecar.child)) - cpuBefore.sidecar) / SAMPLES,
            unit: 'µs',
          });
          if (bare) {
            rows.push(...latencyRows(`model: ${s.name}, ${BARE}`, metric, b, ds, false));
            rows.push({
              case: `model: ${s.name}, bare forwarder process`,
              metric: 'CPU per call',
              value: ((await cpuMicros(bare.child)) - cpuBefore.bare) / SAMPLES,
              unit: 'µs',
            });
          }
        }
        for (const c of [via, viaBare]) await c?.close();
        for (const server of [sidecar, bare]) if (server) await stopChild(server.child);
      }
      return rows;
    } finally {
      await Promise.all(clients.map((c) => c.close().catch(() => {})));
      for (const child of children) if (child.connected) child.disconnect();
      await rm(dir, { recursive: true, force: true }).catch(() => {});
    }
  },
};

export default suite;
