// Network reach attempts for the compromised-agent simulation: TCP, HTTP direct or through the proxy, DNS. Each
// resolves to what happened, never throws, and gives up after a deadline.
import { createSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { connect, isIP } from 'node:net';
import { Agent, type Dispatcher, EnvHttpProxyAgent, request } from 'undici';

export interface Reach {
  /** True when the attempt got through to its target. */
  readonly reached: boolean;
  /** What stopped it (`ECONNREFUSED`, `EAI_AGAIN`, `EPERM`, `HTTP 403 SIDECAR_ERR_POLICY_DENIED`) or what came back. */
  readonly detail: string;
  readonly decision_id: string | null;
}

export const DEFAULT_REACH_TIMEOUT_MS = 2500;

const errCode = (err: unknown): string =>
  (err as NodeJS.ErrnoException).code ?? (err as Error).message ?? String(err);

function deadline<T>(ms: number, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), ms);
  return Promise.race([
    work(ac.signal),
    new Promise<never>((_, reject) =>
      ac.signal.addEventListener('abort', () =>
        reject(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })),
      ),
    ),
  ]).finally(() => clearTimeout(timer));
}

/** Opens a TCP connection (resolving the name first, through the container's resolver). */
export async function tcpReach(
  host: string,
  port: number,
  timeoutMs = DEFAULT_REACH_TIMEOUT_MS,
): Promise<Reach> {
  try {
    await deadline(
      timeoutMs,
      (signal) =>
        new Promise<void>((resolve, reject) => {
          const socket = connect({ host, port, signal });
          socket.once('connect', () => {
            socket.destroy();
            resolve();
          });
          socket.once('error', reject);
        }),
    );
    return { reached: true, detail: 'connected', decision_id: null };
  } catch (err) {
    return { reached: false, detail: errCode(err), decision_id: null };
  }
}

/** One dispatcher per mode and deadline, made on first use (the proxy one reads HTTP_PROXY and NO_PROXY then). */
const dispatchers = new Map<string, Dispatcher>();

function dispatcherFor(how: 'direct' | 'proxy', timeoutMs: number): Dispatcher {
  const key = `${how}:${timeoutMs}`;
  let d = dispatchers.get(key);
  if (d === undefined) {
    const connect = { timeout: timeoutMs };
    d = how === 'direct' ? new Agent({ connect }) : new EnvHttpProxyAgent({ connect });
    dispatchers.set(key, d);
  }
  return d;
}

/** A GET without the proxy (as malware would), or through `HTTP_PROXY` (the only way the lockdown leaves open). */
export async function httpReach(
  url: string,
  how: 'direct' | 'proxy',
  timeoutMs = DEFAULT_REACH_TIMEOUT_MS,
): Promise<Reach> {
  const dispatcher = dispatcherFor(how, timeoutMs);
  try {
    const r = await request(url, { dispatcher, headersTimeout: timeoutMs, bodyTimeout: timeoutMs });
    const body = await r.body.text();
    const decision = r.headers['x-sidecar-decision-id'];
    const decisionId = typeof decision === 'string' ? decision : null;
    // Only a request that went through the sidecar can be refused by it: a direct answer, whatever its body says
    // (the tool server's own 404 is a SIDECAR_ERR_ body), means the target was reached.
    const code = how === 'proxy' ? sidecarRefusal(body, decisionId) : null;
    if (code !== null)
      return { reached: false, detail: `HTTP ${r.statusCode} ${code}`, decision_id: decisionId };
    return { reached: true, detail: `HTTP ${r.statusCode}`, decision_id: decisionId };
  } catch (err) {
    return { reached: false, detail: errCode(err), decision_id: null };
  }
}

/**
 * The sidecar's error code when the sidecar refused the request itself: its uniform error body, carrying the same
 * decision id as the header (an upstream's own error body cannot know the sidecar's decision id).
 */
function sidecarRefusal(body: string, decisionId: string | null): string | null {
  try {
    const error = (JSON.parse(body) as { error?: { code?: unknown; decision_id?: unknown } }).error;
    const code = error?.code;
    if (typeof code !== 'string' || !code.startsWith('SIDECAR_ERR_')) return null;
    return decisionId === null || error?.decision_id === decisionId ? code : null;
  } catch {
    return null;
  }
}

/** A name lookup through the container's resolver (getaddrinfo). */
export async function resolverReach(name: string, timeoutMs = DEFAULT_REACH_TIMEOUT_MS): Promise<Reach> {
  try {
    const addresses = await deadline(timeoutMs, () => lookup(name, { all: true }));
    return { reached: true, detail: addresses.map((a) => a.address).join(', '), decision_id: null };
  } catch (err) {
    return { reached: false, detail: errCode(err), decision_id: null };
  }
}

/** One DNS query for `name` (type A) sent straight to `server`:53 over UDP; reached when any answer comes back. */
export async function dnsQueryReach(
  name: string,
  server: string,
  timeoutMs = DEFAULT_REACH_TIMEOUT_MS,
): Promise<Reach> {
  const socket = createSocket(isIP(server) === 6 ? 'udp6' : 'udp4');
  try {
    await deadline(
      timeoutMs,
      () =>
        new Promise<Buffer>((resolve, reject) => {
          socket.once('message', resolve);
          socket.once('error', reject);
          socket.send(dnsQuery(name), 53, server, (err) => {
            if (err) reject(err);
          });
        }),
    );
    return { reached: true, detail: 'answered', decision_id: null };
  } catch (err) {
    return { reached: false, detail: errCode(err), decision_id: null };
  } finally {
    socket.close();
  }
}

/** A minimal RFC 1035 query: header (id, RD), one question, QTYPE A, QCLASS IN. */
export function dnsQuery(name: string, id = 0x5151): Buffer {
  const labels = name
    .split('.')
    .filter((l) => l !== '')
    .map((l) => {
      const bytes = Buffer.from(l, 'ascii');
      return Buffer.concat([Buffer.from([bytes.length]), bytes]);
    });
  const header = Buffer.from([id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  return Buffer.concat([header, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}
