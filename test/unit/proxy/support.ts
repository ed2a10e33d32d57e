// Shared harness for the proxy suites: a fake Enforcer over a real compiled Policy, loopback upstreams, a proxy
// listener on port 0 with an injected lookup, and raw-socket clients for what undici's ProxyAgent hides.
import { once } from 'node:events';
import {
  createServer as createHttpServer,
  request as httpRequest,
  type IncomingMessage,
  type Server,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { connect, createServer as createNetServer } from 'node:net';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { ProxyAgent } from 'undici';
import { compilePolicy, type Policy } from '../../../sidecar/policy/policy.ts';
import type { Decision } from '../../../sidecar/policy/types.ts';
import type { HostLookup, LookupAnswer } from '../../../sidecar/proxy/address-guard.ts';
import { AddressGuard } from '../../../sidecar/proxy/address-guard.ts';
import {
  createForwardProxy,
  type ForwardProxy,
  type ProxyLimits,
} from '../../../sidecar/proxy/forward-proxy.ts';
import type { DecisionRequest, Enforcer, Verdict } from '../../../sidecar/server/enforcer-types.ts';
import { createMetrics, type Metrics } from '../../../sidecar/server/metrics.ts';

export function policyFrom(yaml: string): Policy {
  const compiled = compilePolicy(yaml, 'test-policy.yaml');
  if (!compiled.ok) throw new Error(compiled.diagnostics.map((d) => d.message).join('\n'));
  return compiled.policy;
}

export interface RecordedCall {
  readonly method: 'decide' | 'refuse';
  readonly request: DecisionRequest;
  readonly verdict: Verdict;
}

/**
 * Evaluates with a real compiled Policy and records every call. It applies the same rule the real enforcer does
 * for non-public destinations (only a rule with an `address` condition may allow), and answers approvals with
 * `approve`.
 */
export class FakeEnforcer implements Enforcer {
  readonly agent: string;
  readonly calls: RecordedCall[] = [];
  approve: (req: DecisionRequest) => boolean = () => false;
  readonly #policy: Policy;
  #seq = 0;

  constructor(policy: Policy) {
    this.#policy = policy;
    this.agent = policy.agent;
  }

  async decide(request: DecisionRequest): Promise<Verdict> {
    const pending = request.addressesPending ? { addressesPending: true } : {};
    let decision: Decision = this.#policy.evaluate(request.action, request.trusted ?? {}, pending);
    if (request.addressesPending && decision.effect !== 'DENY') {
      decision = { effect: 'DENY', rule: decision.rule, reason: 'unevaluable_condition' };
    }
    const rule = decision.rule === null ? undefined : this.#policy.rule(decision.rule);
    if (decision.effect !== 'DENY' && request.nonPublicAddress && !rule?.fields.includes('address')) {
      decision = { effect: 'DENY', rule: decision.rule, reason: 'address_blocked' };
    }
    if (decision.effect === 'REQUIRE_APPROVAL') {
      const approved = !request.signal?.aborted && this.approve(request);
      decision = {
        effect: approved ? 'ALLOW' : 'DENY',
        rule: decision.rule,
        reason: approved ? 'approved' : 'approval_denied',
      };
    }
    return this.#record('decide', request, decision);
  }

  async refuse(request: DecisionRequest, reason: string, errorCode?: Verdict['errorCode']): Promise<Verdict> {
    return this.#record('refuse', request, { effect: 'DENY', rule: null, reason }, errorCode);
  }

  async record(): Promise<boolean> {
    return true;
  }

  /** The last recorded verdict, which is the one a request ended with. */
  last(): RecordedCall {
    const call = this.calls.at(-1);
    if (!call) throw new Error('the enforcer was never called');
    return call;
  }

  #record(
    method: RecordedCall['method'],
    request: DecisionRequest,
    decision: Decision,
    errorCode: Verdict['errorCode'] = 'SIDECAR_ERR_POLICY_DENIED',
  ): Verdict {
    const effect = decision.effect === 'ALLOW' ? 'ALLOW' : 'DENY';
    const verdict: Verdict = {
      decisionId: `decision-${++this.#seq}`,
      effect,
      decision,
      policyDigest: this.#policy.digest,
      ...(effect === 'DENY' ? { errorCode } : {}),
    };
    this.calls.push({ method, request, verdict });
    return verdict;
  }
}

export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingMessage['headers'];
  readonly rawHeaders: readonly string[];
  readonly body: string;
}

export type UpstreamHandler = (
  req: IncomingMessage,
  body: string,
  res: import('node:http').ServerResponse,
) => void;

export interface Upstream {
  readonly port: number;
  readonly seen: SeenRequest[];
  readonly server: Server;
  close(): Promise<void>;
}

const defaultHandler: UpstreamHandler = (_req, _body, res) => {
  res.writeHead(200, {
    'content-type': 'text/plain',
    connection: 'x-upstream-private',
    'x-upstream-private': 'hop',
    'keep-alive': 'timeout=5',
    'x-upstream': 'yes',
    'x-sidecar-decision-id': 'forged-by-upstream',
  });
  res.end('hello from upstream');
};

/** An HTTP server on 127.0.0.1 (or `host`) port 0 that records every request and its body. */
export async function startUpstream(
  handler: UpstreamHandler = defaultHandler,
  host = '127.0.0.1',
): Promise<Upstream> {
  const seen: SeenRequest[] = [];
  const server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      seen.push({
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        rawHeaders: req.rawHeaders,
        body,
      });
      handler(req, body, res);
    });
  });
  server.listen(0, host);
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    server,
    close: () => closeServer(server),
  };
}

/** A TCP server that echoes every byte back, prefixed by nothing: what a tunnel should be transparent to. */
export async function startEcho(): Promise<{
  port: number;
  connections: () => number;
  close(): Promise<void>;
}> {
  let count = 0;
  const sockets = new Set<Socket>();
  const server = createNetServer((socket) => {
    count++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.pipe(socket);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => count,
    close: async () => {
      for (const s of sockets) s.destroy();
      await closeServer(server);
    },
  };
}

async function closeServer(server: Server | import('node:net').Server): Promise<void> {
  if ('closeAllConnections' in server) server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** A port nothing listens on (bound once, then released). */
export async function closedPort(): Promise<number> {
  const server = createNetServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  await closeServer(server);
  return port;
}

/** A lookup answering from a table, recording every name it was asked for. */
export function scriptedLookup(table: Record<string, ReadonlyArray<LookupAnswer>>): {
  lookup: HostLookup;
  asked: string[];
} {
  const asked: string[] = [];
  return {
    asked,
    lookup: async (host) => {
      asked.push(host);
      const answer = table[host];
      if (!answer) throw Object.assign(new Error(`no entry for ${host}`), { code: 'ENOTFOUND' });
      return answer;
    },
  };
}

export const v4 = (address: string): LookupAnswer => ({ address, family: 4 });

export interface ProxyUnderTest {
  readonly port: number;
  readonly url: string;
  readonly enforcer: FakeEnforcer;
  readonly proxy: ForwardProxy;
  readonly metrics: Metrics;
  /** Names the address guard asked DNS about. */
  readonly asked: string[];
  /** Parsed lines of the operational log. */
  readonly logs: Array<Record<string, unknown>>;
  /** Absolute-form requests for http:// targets. */
  readonly agent: ProxyAgent;
  /** CONNECT tunnels even for http:// targets. */
  readonly tunnelAgent: ProxyAgent;
  /** Sockets the proxy's listener still holds, tunnels included. */
  connections(): Promise<number>;
  close(): Promise<void>;
}

export interface ProxyOptions {
  /** Policy YAML, or a function of the proxy's own port for policies that name it. */
  readonly policy: string | ((selfPort: number) => string);
  readonly dns?: Record<string, ReadonlyArray<LookupAnswer>>;
  readonly limits?: Partial<ProxyLimits>;
}

/** The proxy on its own listener (127.0.0.1, port 0), wired the way the lead's agent listener wires it. */
export async function startProxy(opts: ProxyOptions): Promise<ProxyUnderTest> {
  const server = createHttpServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  let policy: Policy;
  try {
    policy = policyFrom(typeof opts.policy === 'string' ? opts.policy : opts.policy(port));
  } catch (err) {
    await closeServer(server);
    throw err;
  }
  const enforcer = new FakeEnforcer(policy);
  const { lookup, asked } = scriptedLookup(opts.dns ?? {});
  const guard = new AddressGuard({ lookup, ownListeners: () => [{ address: '127.0.0.1', port }] });
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line));
      cb();
    },
  });
  const metrics = createMetrics();
  let proxy: ForwardProxy;
  try {
    proxy = createForwardProxy({
      enforcer,
      currentPolicy: () => policy,
      guard,
      logger: pino({ level: 'info' }, sink).child({ component: 'proxy' }),
      metrics,
      ...(opts.limits ? { limits: opts.limits } : {}),
    });
  } catch (err) {
    await closeServer(server);
    throw err;
  }
  server.on('request', (req, res) => proxy.handleRequest(req, res));
  server.on('connect', (req, socket, head) => proxy.handleConnect(req, socket, head));
  const url = `http://127.0.0.1:${port}`;
  const agent = new ProxyAgent({ uri: url });
  const tunnelAgent = new ProxyAgent({ uri: url, proxyTunnel: true });
  return {
    port,
    url,
    enforcer,
    proxy,
    metrics,
    asked,
    logs,
    agent,
    tunnelAgent,
    connections: () => new Promise((resolve) => server.getConnections((_err, n) => resolve(n))),
    close: async () => {
      await Promise.all([agent.close(), tunnelAgent.close()]);
      await proxy.close();
      await closeServer(server);
    },
  };
}

export interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: string;
}

function parseHead(head: string): { status: number; headers: Record<string, string> } {
  const [statusLine, ...lines] = head.split('\r\n');
  const status = Number(statusLine?.split(' ')[1]);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const i = line.indexOf(':');
    if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return { status, headers };
}

/**
 * Sends `CONNECT <target>` on a raw socket. On 200 the socket stays open as the tunnel; otherwise the whole error
 * response is read and the socket is closed by the proxy.
 */
export async function rawConnect(
  proxyPort: number,
  target: string,
): Promise<RawResponse & { socket: Socket }> {
  const socket = connect(proxyPort, '127.0.0.1');
  socket.on('error', () => {});
  await once(socket, 'connect');
  socket.write(`CONNECT ${target} HTTP/1.1\r\nhost: ${target}\r\n\r\n`);
  const buffered = await readUntil(socket, (buf) => {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return false;
    const { status, headers } = parseHead(buf.subarray(0, end).toString('latin1'));
    return status === 200 || buf.length >= end + 4 + Number(headers['content-length'] ?? 0);
  });
  const end = buffered.indexOf('\r\n\r\n');
  if (end < 0) return { status: 0, headers: {}, body: '', socket };
  const { status, headers } = parseHead(buffered.subarray(0, end).toString('latin1'));
  return { status, headers, body: buffered.subarray(end + 4).toString('utf8'), socket };
}

/** Reads from `socket` until `done` says the buffer is complete or the socket ends; leaves the socket paused. */
function readUntil(socket: Socket, done: (buf: Buffer) => boolean): Promise<Buffer> {
  return new Promise((resolve) => {
    let buf = Buffer.alloc(0);
    const finish = () => {
      socket.off('data', onData);
      socket.off('close', finish);
      socket.pause();
      resolve(buf);
    };
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      if (done(buf)) finish();
    };
    socket.on('data', onData);
    socket.on('close', finish);
  });
}

/** Writes `data` into an open tunnel and reads until as many bytes came back. */
export async function roundTrip(socket: Socket, data: string): Promise<string> {
  const reply = readUntil(socket, (buf) => buf.length >= Buffer.byteLength(data));
  socket.write(data);
  socket.resume();
  return (await reply).toString('utf8');
}

/** An absolute-form request sent with node:http, for headers undici refuses to send (connection, te, ...). */
export function rawProxyRequest(
  proxyPort: number,
  target: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<RawResponse & { rawHeaders: string[] }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port: proxyPort,
        method: opts.method ?? 'GET',
        path: target,
        headers: opts.headers ?? {},
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: Object.fromEntries(Object.entries(res.headers).map(([k, v]) => [k, String(v)])),
            rawHeaders: res.rawHeaders,
            body: Buffer.concat(chunks).toString('utf8'),
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}
