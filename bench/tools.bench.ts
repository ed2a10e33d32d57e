// MCP gateway overhead: sequential tools/call round trips, directly to an upstream and through the sidecar's /mcp
// gateway (real policy, enforcer, AuditChain, context-token signing), measured in the same run, interleaved.
// The upstreams and each sidecar run as separate processes so the client does not share their event loop.
import { type ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { pino } from 'pino';
import { Agent } from 'undici';
import { startHelpdeskToolServer } from '../agents/helpdesk-tools/server.ts';
import type { AuditSyncMode } from '../sidecar/audit/chain.ts';
import { logDestination } from '../sidecar/cli/logger.ts';
import { CONTEXT_HEADER, mintContextToken } from '../sidecar/identity/context-token.ts';
import { createEndUserVerifier } from '../sidecar/identity/end-user.ts';
import { generateRoleKeyPair, importSigningKey, importVerificationKeys } from '../sidecar/identity/keys.ts';
import { startSidecar } from '../sidecar/server/sidecar.ts';
import { createToolGateway } from '../sidecar/tools/gateway.ts';
import { serveBareForwarder } from './bare-relay.ts';
import { type BenchRow, type BenchSuite, percentile, stopChild, timedDispatch } from './lib.ts';

const WARMUP = 300;
const ROUNDS = 10;
const PER_ROUND = 300;
const SELF = fileURLToPath(import.meta.url);
const ROLE_ENV = 'TOOLS_BENCH_ROLE';
const AGENT = 'support-agent';

type ToChild =
  | { type: 'cpu' }
  | { type: 'upstreams'; which: 'echo' | 'helpdesk'; publicJwk: JWK }
  | { type: 'bare'; upstream: string }
  | {
      type: 'sidecar';
      dir: string;
      keyFile: string;
      fakeUrl: string;
      helpdeskUrl: string;
      sync: AuditSyncMode;
      /** A JWKS file: the sidecar then verifies an end-user JWT on every call. */
      jwksFile?: string;
    };
type FromChild = { type: 'ready'; urls: Record<string, string> } | { type: 'cpu'; micros: number };

const reply = (msg: FromChild) => process.send?.(msg);

// ---- child roles ----

/**
 * A minimal MCP server (the floor: what any upstream costs) or the demo helpdesk (a realistic one), each in a process
 * of its own: the helpdesk builds an MCP server per call, and its collections must not pause the echo rows.
 */
async function serveUpstreams(which: 'echo' | 'helpdesk', publicJwk: JWK): Promise<void> {
  if (which === 'helpdesk') {
    const helpdesk = await startHelpdeskToolServer({
      roleKeys: new Map([[AGENT, await importVerificationKeys(publicJwk)]]),
    });
    reply({ type: 'ready', urls: { helpdesk: helpdesk.url } });
    process.on('disconnect', () => process.exit(0));
    return;
  }
  const fake = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const msg = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
        id?: unknown;
        method: string;
        params?: { arguments?: unknown };
      };
      if (msg.id === undefined) return void res.writeHead(202).end();
      const result =
        msg.method === 'initialize'
          ? {
              protocolVersion: '2025-11-25',
              capabilities: { tools: {} },
              serverInfo: { name: 'echo', version: '0' },
            }
          : msg.method === 'tools/list'
            ? {
                tools: [
                  { name: 'echo', inputSchema: { type: 'object', properties: { text: { type: 'string' } } } },
                ],
              }
            : { content: [{ type: 'text', text: JSON.stringify(msg.params?.arguments) }] };
      const body = JSON.stringify({ jsonrpc: '2.0', id: msg.id, result });
      res
        .writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
        .end(body);
    });
  });
  fake.keepAliveTimeout = 60_000;
  fake.listen(0, '127.0.0.1');
  await once(fake, 'listening');
  reply({ type: 'ready', urls: { fake: `http://127.0.0.1:${(fake.address() as AddressInfo).port}/mcp` } });
  process.on('disconnect', () => process.exit(0));
}

async function serveSidecar(msg: Extract<ToChild, { type: 'sidecar' }>): Promise<void> {
  const tag = `${msg.sync}${msg.jwksFile ? '-jwt' : ''}`;
  const policyPath = join(msg.dir, `policy-${tag}.yaml`);
  await writeFile(
    policyPath,
    `version: 1
agent: "${AGENT}"
rules:
  - name: "bench-tools"
    action: tool_call
    conditions: { tool: { in: ["echo", "query_knowledge_base"] } }
    effect: ALLOW
`,
  );
  // The canonical line per call is part of the cost: the sidecar's own log destination, pointed at a file.
  const logger = pino(logDestination(join(msg.dir, `sidecar-${tag}.log`)));
  let close: (() => Promise<void>) | undefined;
  const sidecar = await startSidecar(
    {
      policyPath,
      listen: { host: '127.0.0.1', port: 0 },
      auditDir: join(msg.dir, `audit-${tag}`),
      auditSync: msg.sync,
      watchPolicy: false,
      mounts: async (parts) => {
        const identity =
          msg.jwksFile === undefined
            ? undefined
            : await createEndUserVerifier(
                { required: true, jwks_file: msg.jwksFile, audience: 'bench-agents' },
                { agent: AGENT },
              );
        const gateway = await createToolGateway({
          ...(identity === undefined ? {} : { identity }),
          config: {
            upstreams: [
              // Its own context audience: two upstreams may not share one (the echo server checks no token).
              { name: 'echo', url: msg.fakeUrl, audience: 'echo-tools' },
              { name: 'helpdesk', url: msg.helpdeskUrl },
            ],
            context: { key_file: msg.keyFile },
          },
          parts,
        });
        close = gateway.close;
        return [gateway.route];
      },
    },
    logger,
  );
  reply({ type: 'ready', urls: { mcp: `http://127.0.0.1:${sidecar.agentAddress.port}/mcp` } });
  process.on('disconnect', () => {
    void sidecar
      .close(1_000)
      .then(() => close?.())
      .finally(() => process.exit(0));
  });
}

/**
 * The floor for any Node gateway on this machine: a forwarder with no policy, audit, signing or parsing, one more
 * loopback hop and event loop between the client and the upstream. What the sidecar adds beyond it is its own.
 */
async function serveBare(upstream: string): Promise<void> {
  const port = await serveBareForwarder(upstream, () => new URL(upstream).pathname);
  reply({ type: 'ready', urls: { bare: `http://127.0.0.1:${port}/mcp` } });
  process.on('disconnect', () => process.exit(0));
}

const role = process.env[ROLE_ENV];
if (role !== undefined) {
  process.on('message', (msg: ToChild) => {
    if (msg.type === 'upstreams') void serveUpstreams(msg.which, msg.publicJwk);
    if (msg.type === 'sidecar') void serveSidecar(msg);
    if (msg.type === 'bare') void serveBare(msg.upstream);
    if (msg.type === 'cpu') {
      const { user, system } = process.cpuUsage();
      reply({ type: 'cpu', micros: user + system });
    }
  });
}

// ---- the parent: round trips and reporting ----

function startChild(): ChildProcess {
  return fork(SELF, [], {
    env: { ...process.env, [ROLE_ENV]: 'child' },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
}

async function ask<T extends FromChild['type']>(
  child: ChildProcess,
  msg: ToChild,
  want: T,
): Promise<Extract<FromChild, { type: T }>> {
  const answer = new Promise<Extract<FromChild, { type: T }>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`child did not answer "${want}" within 20 s`)), 20_000);
    const onExit = (code: number | null) => reject(new Error(`child exited (${code})`));
    const onMessage = (m: FromChild) => {
      if (m.type !== want) return;
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
      resolve(m as Extract<FromChild, { type: T }>);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
  child.send(msg);
  return answer;
}

interface Path {
  readonly name: string;
  readonly url: string;
  /** Headers per call (the direct helpdesk path mints its own context token, as a sidecar would). */
  readonly headers: (body: string) => Promise<Record<string, string>>;
  readonly body: string;
  readonly samples: number[];
}

const dispatcher = new Agent({ keepAliveTimeout: 60_000, connections: 4 });

async function roundTrip(p: Path): Promise<number> {
  const headers = {
    'content-type': 'application/json',
    accept: 'application/json, text/event-stream',
    'mcp-protocol-version': '2025-11-25',
    ...(await p.headers(p.body)),
  };
  const target = new URL(p.url);
  const t = await timedDispatch(dispatcher, {
    origin: target.origin,
    path: target.pathname,
    method: 'POST',
    headers,
    body: p.body,
  });
  const text = t.body.toString('utf8');
  if (t.status !== 200 || !text.includes('"result"'))
    throw new Error(`${p.name}: ${t.status} ${text.slice(0, 200)}`);
  return t.endMs;
}

async function run(): Promise<BenchRow[]> {
  const dir = await mkdtemp(join(tmpdir(), 'tools-bench-'));
  const children: ChildProcess[] = [];
  try {
    const pair = await generateRoleKeyPair();
    const keyFile = join(dir, `${AGENT}.private.jwk.json`);
    await writeFile(keyFile, JSON.stringify(pair.privateJwk));
    const signingKey = await importSigningKey(pair.privateJwk);

    const ups: Record<string, string> = {};
    for (const which of ['echo', 'helpdesk'] as const) {
      const upstreamChild = startChild();
      children.push(upstreamChild);
      const ready = await ask(
        upstreamChild,
        { type: 'upstreams', which, publicJwk: pair.publicJwk },
        'ready',
      );
      Object.assign(ups, ready.urls);
    }
    // An end user's ES256 token, as an identity provider would issue it.
    const idp = await generateKeyPair('ES256', { extractable: true });
    const jwksFile = join(dir, 'jwks.json');
    await writeFile(
      jwksFile,
      JSON.stringify({ keys: [{ ...(await exportJWK(idp.publicKey)), kid: 'bench', alg: 'ES256' }] }),
    );
    const jwt = await new SignJWT({ sub: 'u-1001', role: AGENT })
      .setProtectedHeader({ alg: 'ES256', kid: 'bench' })
      .setAudience('bench-agents')
      .setExpirationTime('1h')
      .sign(idp.privateKey);

    const sidecarUrl = async (sync: AuditSyncMode, withJwt = false) => {
      const child = startChild();
      children.push(child);
      const { urls } = await ask(
        child,
        {
          type: 'sidecar',
          dir,
          keyFile,
          fakeUrl: ups['fake'] as string,
          helpdeskUrl: ups['helpdesk'] as string,
          sync,
          ...(withJwt ? { jwksFile } : {}),
        },
        'ready',
      );
      return { url: urls['mcp'] as string, child };
    };
    const bareChild = startChild();
    children.push(bareChild);
    const bare = (await ask(bareChild, { type: 'bare', upstream: ups['fake'] as string }, 'ready')).urls;
    const sidecars = {
      interval: await sidecarUrl('interval'),
      always: await sidecarUrl('always'),
      jwt: await sidecarUrl('interval', true),
    };
    const viaDefault = sidecars.interval.url;
    const viaAlways = sidecars.always.url;
    const viaJwt = sidecars.jwt.url;

    const echo = JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'echo', arguments: { text: 'hello' } },
    });
    const kbArgs = { query: 'password' };
    const kb = JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'tools/call',
      params: { name: 'query_knowledge_base', arguments: kbArgs },
    });
    const none = async () => ({});
    const bearer = async () => ({ authorization: `Bearer ${jwt}` });
    const minted = async () => ({
      [CONTEXT_HEADER]: await mintContextToken(signingKey, {
        agent: AGENT,
        role: AGENT,
        sub: null,
        decisionId: randomUUID(),
        tool: 'query_knowledge_base',
        args: kbArgs,
      }),
    });
    const paths: Path[] = [
      { name: 'echo direct', url: ups['fake'] as string, headers: none, body: echo, samples: [] },
      {
        name: 'echo via bare Node forwarder (no policy, no audit)',
        url: bare['bare'] as string,
        headers: none,
        body: echo,
        samples: [],
      },
      {
        name: 'echo via sidecar (audit sync interval, the default)',
        url: viaDefault,
        headers: none,
        body: echo,
        samples: [],
      },
      {
        name: 'echo via sidecar (audit sync always)',
        url: viaAlways,
        headers: none,
        body: echo,
        samples: [],
      },
      {
        name: 'echo via sidecar (audit sync interval, end-user JWT)',
        url: viaJwt,
        headers: bearer,
        body: echo,
        samples: [],
      },
      {
        name: 'helpdesk direct (client-minted token)',
        url: ups['helpdesk'] as string,
        headers: minted,
        body: kb,
        samples: [],
      },
      {
        name: 'helpdesk via sidecar (audit sync interval)',
        url: viaDefault,
        headers: none,
        body: kb,
        samples: [],
      },
    ];
    for (const p of paths) for (let i = 0; i < WARMUP; i++) await roundTrip(p);
    // CPU time each sidecar process spends per call: unlike latency, barely moved by other load on the machine.
    const cpuBefore = Object.fromEntries(
      await Promise.all(
        Object.entries(sidecars).map(async ([k, v]) => [
          k,
          (await ask(v.child, { type: 'cpu' }, 'cpu')).micros,
        ]),
      ),
    ) as Record<keyof typeof sidecars, number>;
    // Interleaved rounds: drift (GC, disk, CPU frequency) lands on every path alike.
    for (let r = 0; r < ROUNDS; r++) {
      for (const p of paths) for (let i = 0; i < PER_ROUND; i++) p.samples.push(await roundTrip(p));
    }

    const cpuAfter = Object.fromEntries(
      await Promise.all(
        Object.entries(sidecars).map(async ([k, v]) => [
          k,
          (await ask(v.child, { type: 'cpu' }, 'cpu')).micros,
        ]),
      ),
    ) as Record<keyof typeof sidecars, number>;
    const callsServed = {
      interval: 2 * ROUNDS * PER_ROUND,
      always: ROUNDS * PER_ROUND,
      jwt: ROUNDS * PER_ROUND,
    };

    const q = (p: Path) => {
      const sorted = Float64Array.from(p.samples).sort();
      return { p50: percentile(sorted, 50), p99: percentile(sorted, 99) };
    };
    const rows: BenchRow[] = [];
    const report = (p: Path, base?: Path) => {
      const s = q(p);
      const b = base ? q(base) : undefined;
      rows.push({
        case: `tools: ${p.name}`,
        metric: 'p50',
        value: s.p50,
        unit: 'ms',
        ...(b && base ? { baseline: { case: base.name, value: b.p50 } } : {}),
      });
      rows.push({
        case: `tools: ${p.name}`,
        metric: 'p99',
        value: s.p99,
        unit: 'ms',
        ...(b && base ? { baseline: { case: base.name, value: b.p99 } } : {}),
      });
      if (b) {
        rows.push({ case: `tools: ${p.name}`, metric: 'added p50', value: s.p50 - b.p50, unit: 'ms' });
        rows.push({
          case: `tools: ${p.name}`,
          metric: 'added p99',
          value: s.p99 - b.p99,
          unit: 'ms',
          ...(p.name.includes('sidecar') ? { target: 'added p99 <= 1 ms' } : {}),
        });
      }
    };
    const [echoDirect, echoBare, echoDefault, echoAlways, echoJwt, hdDirect, hdDefault] = paths as [
      Path,
      Path,
      Path,
      Path,
      Path,
      Path,
      Path,
    ];
    report(echoDirect);
    report(echoBare, echoDirect);
    report(echoDefault, echoDirect);
    report(echoAlways, echoDirect);
    report(echoJwt, echoDirect);
    report(hdDirect);
    report(hdDefault, hdDirect);
    for (const k of Object.keys(sidecars) as Array<keyof typeof sidecars>) {
      rows.push({
        case: `tools: sidecar process (audit sync ${k === 'jwt' ? 'interval, end-user JWT' : k})`,
        metric: 'CPU per call',
        value: (cpuAfter[k] - cpuBefore[k]) / callsServed[k],
        unit: 'µs',
      });
    }
    rows.push({ case: 'tools: samples per path', metric: 'calls', value: ROUNDS * PER_ROUND, unit: 'calls' });
    return rows;
  } finally {
    for (const c of children) await stopChild(c);
    await dispatcher.close();
    await rm(dir, { recursive: true, force: true });
  }
}

const suite: BenchSuite = { name: 'tools', run };
export default suite;
