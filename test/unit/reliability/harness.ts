// Shared harness for the fault suites: an in-process sidecar (startSidecar, or the same parts assembled by hand
// around an AuditChain whose disk can be made to fail), raw-socket clients, misbehaving loopback upstreams, and
// the checks every fault test ends with: the sidecar still answers and its audit chain verifies.
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pino } from 'pino';
import { afterAll, beforeAll } from 'vitest';
import { ApprovalQueue } from '../../../sidecar/approvals/approval-queue.ts';
import { AuditChain, type AuditIo, type AuditSyncMode } from '../../../sidecar/audit/chain.ts';
import type { AuditEntry } from '../../../sidecar/audit/entry.ts';
import { auditFileName } from '../../../sidecar/audit/entry.ts';
import { type VerifyResult, verifyAuditFile } from '../../../sidecar/audit/verify.ts';
import { AddressGuard } from '../../../sidecar/proxy/address-guard.ts';
import {
  createForwardProxy,
  type ForwardProxy,
  type ProxyLimits,
} from '../../../sidecar/proxy/forward-proxy.ts';
import {
  createAgentServer,
  DEFAULT_LISTENER_LIMITS,
  type ListenerLimits,
  type MountedRoute,
} from '../../../sidecar/server/agent-listener.ts';
import { SidecarEnforcer } from '../../../sidecar/server/enforcer.ts';
import { createMetrics, type Metrics } from '../../../sidecar/server/metrics.ts';
import { PolicyHolder } from '../../../sidecar/server/policy-holder.ts';
import { RateLimiter } from '../../../sidecar/server/rate-limiter.ts';
import { type Sidecar, type SidecarParts, startSidecar } from '../../../sidecar/server/sidecar.ts';
import { completeAuditEntries } from '../../support/audit-lines.ts';

export const AGENT = 'reliability';

/** Reads under /data and any loopback upstream (HTTP or CONNECT); nothing else. */
export function policyText(opts: { readonly readPrefix?: string; readonly agent?: string } = {}): string {
  return `agent: ${opts.agent ?? AGENT}
rules:
  - name: reads
    action: file_read
    conditions: { path: { starts_with: ${opts.readPrefix ?? '/data'} } }
    effect: ALLOW
  - name: loopback-upstreams
    action: network
    conditions:
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
`;
}

export const silent = () => pino({ level: 'silent' });

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `sidecar-${prefix}-`));
}

export interface SidecarUnderTest {
  readonly port: number;
  readonly url: string;
  readonly dir: string;
  readonly policyPath: string;
  readonly auditPath: string;
  readonly metrics: Metrics;
  readonly sidecar?: Sidecar;
  close(): Promise<void>;
}

export interface StartOptions {
  readonly policy?: string;
  /** Gateways to mount on the agent listener, built from the sidecar's parts (as startSidecar's `mounts`). */
  readonly mounts?: (parts: SidecarParts) => Promise<readonly MountedRoute[]>;
  readonly listenerLimits?: Partial<ListenerLimits>;
  readonly proxyLimits?: Partial<ProxyLimits>;
  readonly watchPolicy?: boolean;
  /** startWithDisk only: the chain's sync mode (default: the chain's default). */
  readonly auditSync?: AuditSyncMode;
}

/** The real startSidecar on 127.0.0.1:0 with a temp policy file and audit dir (fsync off: the disk is not under test). */
export async function startInProcess(opts: StartOptions = {}): Promise<SidecarUnderTest> {
  const dir = await tempDir('rel');
  const policyPath = join(dir, 'policy.yaml');
  await writeFile(policyPath, opts.policy ?? policyText());
  const sidecar = await startSidecar(
    {
      policyPath,
      listen: { host: '127.0.0.1', port: 0 },
      auditDir: join(dir, 'audit'),
      auditSync: 'never',
      watchPolicy: opts.watchPolicy ?? false,
      ...(opts.listenerLimits ? { listenerLimits: opts.listenerLimits } : {}),
      ...(opts.proxyLimits ? { proxyLimits: opts.proxyLimits } : {}),
    },
    silent(),
  );
  const port = sidecar.agentAddress.port;
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    dir,
    policyPath,
    auditPath: sidecar.audit.path,
    metrics: sidecar.metrics,
    sidecar,
    close: async () => {
      await sidecar.close(200);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

type FileHandle = import('node:fs/promises').FileHandle;

/**
 * A switchable disk for AuditChain's `io`. Its operations are own properties, not methods: AuditChain spreads the
 * object it is given over its defaults, and a spread copies no prototype methods.
 */
export class FaultyDisk implements AuditIo {
  mode: 'ok' | 'enospc' | 'eacces' | 'eio-on-sync' = 'ok';
  failures = 0;

  write = async (file: FileHandle, data: Buffer): Promise<void> => {
    if (this.mode === 'enospc' || this.mode === 'eacces') {
      this.failures++;
      // A full disk accepts part of a write before it refuses: the chain must cut those bytes off again.
      if (this.mode === 'enospc') await file.write(data, 0, Math.floor(data.length / 2), null);
      throw Object.assign(
        new Error(this.mode === 'enospc' ? 'no space left on device' : 'permission denied'),
        {
          code: this.mode === 'enospc' ? 'ENOSPC' : 'EACCES',
        },
      );
    }
    let offset = 0;
    while (offset < data.length) {
      const { bytesWritten } = await file.write(data, offset, data.length - offset, null);
      offset += bytesWritten;
    }
  };

  sync = async (file: FileHandle): Promise<void> => {
    if (this.mode === 'eio-on-sync') {
      this.failures++;
      throw Object.assign(new Error('i/o error'), { code: 'EIO' });
    }
    await file.datasync();
  };

  truncate = (file: FileHandle, length: number): Promise<void> => file.truncate(length);
}

/**
 * The same parts startSidecar assembles (PolicyHolder, AuditChain, SidecarEnforcer, forward proxy, agent listener),
 * with the AuditChain's io injected: startSidecar cannot take one, and as root permission bits stop no write.
 */
export async function startWithDisk(
  disk: AuditIo,
  opts: StartOptions = {},
): Promise<SidecarUnderTest & { audit: AuditChain }> {
  const dir = await tempDir('disk');
  const policyPath = join(dir, 'policy.yaml');
  await writeFile(policyPath, opts.policy ?? policyText());
  const logger = silent();
  const metrics = createMetrics();
  const policies = await PolicyHolder.load(policyPath, logger, metrics);
  const audit = await AuditChain.open({
    dir: join(dir, 'audit'),
    agent: policies.current.agent,
    io: disk,
    ...(opts.auditSync ? { sync: opts.auditSync } : {}),
  });
  const enforcer = new SidecarEnforcer({
    policies,
    audit,
    approvals: new ApprovalQueue({ timeoutMs: 1000 }),
    limiter: new RateLimiter(),
    metrics,
    logger,
  });
  const own: Array<{ address: string; port: number }> = [];
  const proxy: ForwardProxy = createForwardProxy({
    enforcer,
    currentPolicy: () => policies.current,
    guard: new AddressGuard({ ownListeners: () => own }),
    logger,
    metrics,
    ...(opts.proxyLimits ? { limits: opts.proxyLimits } : {}),
  });
  const routes = opts.mounts ? await opts.mounts({ enforcer, policies, metrics, logger }) : [];
  const server = createAgentServer(
    { enforcer, proxy, logger, ready: () => !audit.failed, routes },
    { ...DEFAULT_LISTENER_LIMITS, ...opts.listenerLimits },
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  own.push({ address: '127.0.0.1', port });
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    dir,
    policyPath,
    auditPath: join(dir, 'audit', auditFileName(policies.current.agent)),
    metrics,
    audit,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await proxy.close();
      await audit.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---- observing the result ----

export async function auditEntries(path: string): Promise<AuditEntry[]> {
  return completeAuditEntries(await readFile(path, 'utf8').catch(() => ''));
}

export function verifyChain(path: string): Promise<VerifyResult> {
  return verifyAuditFile(path);
}

/** The sidecar still answers: /healthz 200 and a real decision from /v1/evaluate. */
export async function stillServing(url: string): Promise<boolean> {
  const health = await fetch(`${url}/healthz`).catch(() => undefined);
  if (health?.status !== 200) return false;
  const r = await evaluate(url, { type: 'file_read', path: '/data/ok' }).catch(() => undefined);
  return r?.status === 200 && r.body['effect'] === 'ALLOW';
}

export interface EvalResult {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

export async function evaluate(url: string, action: unknown): Promise<EvalResult> {
  const res = await fetch(`${url}/v1/evaluate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof action === 'string' ? action : JSON.stringify(action),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

export interface ProxiedResult {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** Set when the response was cut after its head: what the agent saw instead of a complete body. */
  readonly cut?: string;
}

/** One absolute-form request through the sidecar's forward proxy, on a fresh connection. */
export function proxied(
  sidecarPort: number,
  target: string,
  opts: { method?: string; body?: string; signal?: AbortSignal } = {},
): Promise<ProxiedResult> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: '127.0.0.1',
      port: sidecarPort,
      method: opts.method ?? 'GET',
      path: target,
      agent: false,
      headers: opts.body === undefined ? {} : { 'content-length': Buffer.byteLength(opts.body) },
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    req.on('error', reject);
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      const done = (cut?: string) =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString('utf8'),
          ...(cut ? { cut } : {}),
        });
      res.on('end', () => done());
      res.on('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
      res.on('aborted', () => done('aborted'));
    });
    req.end(opts.body);
  });
}

export function errorCodeOf(body: string): string | undefined {
  try {
    return (JSON.parse(body) as { error?: { code?: string } }).error?.code;
  } catch {
    return undefined;
  }
}

// ---- raw sockets ----

export interface RawOutcome {
  /** Everything the sidecar sent. */
  readonly text: string;
  /** The sidecar closed (or reset) the connection before the deadline. */
  readonly closed: boolean;
}

/**
 * Sends `parts` (strings, Buffers, or pauses in ms) over one connection, optionally half-closes, and reads until
 * the sidecar closes or `deadlineMs` passes. Bounded: the socket is destroyed at the deadline.
 */
export async function rawExchange(
  port: number,
  parts: ReadonlyArray<string | Buffer | number>,
  opts: { endAfter?: boolean; deadlineMs?: number; stopWhen?: (text: string) => boolean } = {},
): Promise<RawOutcome> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await once(socket, 'connect');
  let text = '';
  let closed = false;
  const finished = new Promise<void>((resolve) => {
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (opts.stopWhen?.(text)) resolve();
    });
    socket.on('close', () => {
      closed = true;
      resolve();
    });
  });
  const sending = (async () => {
    for (const part of parts) {
      if (closed || socket.destroyed) return;
      if (typeof part === 'number') await sleep(part);
      else socket.write(part);
    }
    if (opts.endAfter && !socket.destroyed) socket.end();
  })();
  const deadline = sleep(opts.deadlineMs ?? 5000);
  await Promise.race([finished, deadline]);
  socket.destroy();
  await sending.catch(() => undefined);
  return { text, closed };
}

/** Splits what a connection received into responses (status + headers + content-length body). */
export function splitResponses(
  text: string,
): Array<{ status: number; headers: Record<string, string>; body: string }> {
  const out: Array<{ status: number; headers: Record<string, string>; body: string }> = [];
  let rest = text;
  while (rest.startsWith('HTTP/1.1 ')) {
    const end = rest.indexOf('\r\n\r\n');
    if (end < 0) break;
    const [statusLine, ...lines] = rest.slice(0, end).split('\r\n');
    const headers: Record<string, string> = {};
    for (const l of lines) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
    }
    const length = Number(headers['content-length'] ?? 0);
    out.push({
      status: Number(statusLine?.split(' ')[1]),
      headers,
      body: rest.slice(end + 4, end + 4 + length),
    });
    rest = rest.slice(end + 4 + length);
  }
  return out;
}

// ---- misbehaving upstreams ----

export type UpstreamBehaviour =
  | { readonly kind: 'ok' }
  | { readonly kind: 'hang' }
  | { readonly kind: 'reset-before-headers' }
  | { readonly kind: 'reset-mid-body' }
  | { readonly kind: 'trickle'; readonly everyMs: number; readonly bytes: number };

export interface FaultyUpstream {
  readonly port: number;
  /** Requests that reached the upstream (connections that sent at least a request head). */
  hits: number;
  /** Connections the upstream saw closed by its peer (the sidecar). */
  peerClosed: number;
  behaviour: UpstreamBehaviour;
  close(): Promise<void>;
}

const OK_BODY = 'hello from upstream';

/** A raw TCP upstream that speaks just enough HTTP/1.1 to misbehave precisely. */
export async function startFaultyUpstream(
  behaviour: UpstreamBehaviour = { kind: 'ok' },
): Promise<FaultyUpstream> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const state: FaultyUpstream = {
    port: 0,
    hits: 0,
    peerClosed: 0,
    behaviour,
    close: async () => {
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
  const server = createNetServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    let buffered = '';
    socket.on('end', () => {
      state.peerClosed++;
    });
    socket.on('close', () => sockets.delete(socket));
    socket.on('data', (d: Buffer) => {
      buffered += d.toString('latin1');
      // One request per connection is all these tests need; keep-alive reuse answers the next head the same way.
      while (buffered.includes('\r\n\r\n')) {
        buffered = buffered.slice(buffered.indexOf('\r\n\r\n') + 4);
        state.hits++;
        respond(socket);
      }
    });
  });
  const respond = (socket: Socket) => {
    const b = state.behaviour;
    switch (b.kind) {
      case 'ok':
        socket.write(
          `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${OK_BODY.length}\r\n\r\n${OK_BODY}`,
        );
        return;
      case 'hang':
        return;
      case 'reset-before-headers':
        socket.resetAndDestroy();
        return;
      case 'reset-mid-body':
        socket.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000\r\n\r\n', () => {
          socket.write('x'.repeat(100), () => setTimeout(() => socket.resetAndDestroy(), 20));
        });
        return;
      case 'trickle': {
        socket.write(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${b.bytes}\r\n\r\n`);
        let sent = 0;
        const timer = setInterval(() => {
          if (socket.destroyed || sent >= b.bytes) {
            clearInterval(timer);
            timers.delete(timer);
            return;
          }
          socket.write('t');
          sent++;
        }, b.everyMs);
        timers.add(timer);
        return;
      }
    }
  };
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  (state as { port: number }).port = (server.address() as AddressInfo).port;
  return state;
}

/** A port nothing listens on (bound once, then released). */
export async function closedPort(): Promise<number> {
  const s = createNetServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Runs `worker` from `concurrency` loops until `stop()` resolves; bounded by `maxMs` whatever happens. */
export async function underLoad<T>(
  concurrency: number,
  worker: (i: number) => Promise<T>,
  during: () => Promise<void>,
  maxMs = 10_000,
): Promise<T[]> {
  const results: T[] = [];
  let stop = false;
  const deadline = setTimeout(() => {
    stop = true;
  }, maxMs);
  const loops = Array.from({ length: concurrency }, async (_, i) => {
    while (!stop) results.push(await worker(i));
  });
  try {
    await during();
  } finally {
    stop = true;
    clearTimeout(deadline);
    await Promise.all(loops);
  }
  return results;
}

/**
 * An in-process sidecar and a faulty upstream shared by the tests of one file: started before them, closed after
 * them. Read `s` and `up` inside tests and hooks (they exist once the file's beforeAll has run).
 */
export function useSidecarAndUpstream(
  opts: StartOptions = {},
  behaviour?: UpstreamBehaviour,
): { readonly s: SidecarUnderTest; readonly up: FaultyUpstream } {
  let s: SidecarUnderTest | undefined;
  let up: FaultyUpstream | undefined;
  beforeAll(async () => {
    s = await startInProcess(opts);
    up = await startFaultyUpstream(behaviour);
  });
  afterAll(async () => {
    await up?.close();
    await s?.close();
  });
  const started = <T>(v: T | undefined): T => {
    if (v === undefined) throw new Error("used before the file's beforeAll started the sidecar");
    return v;
  };
  return {
    get s() {
      return started(s);
    },
    get up() {
      return started(up);
    },
  };
}
