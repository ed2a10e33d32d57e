// CONNECT tunnels: parse the authority, decide at origin level, splice the agent's socket to the pinned address.
import type { IncomingMessage } from 'node:http';
import { connect, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { ErrorCode } from '../errors.ts';
import { ERRORS } from '../errors.ts';
import type { Verdict } from '../server/enforcer-types.ts';
import { DECISION_HEADER, writeSocketError } from '../server/http-errors.ts';
import type { Metrics } from '../server/metrics.ts';
import { pinnedLookup } from './address-guard.ts';
import type { EgressDeps, NetworkAction, Resolved } from './egress-decision.ts';
import { decideEgress, logProxyLine } from './egress-decision.ts';
import type { ProxyLimits } from './limits.ts';
import { classifyUpstreamError, type UpstreamFailure } from './upstream-errors.ts';

export interface TunnelDeps extends EgressDeps {
  readonly logger: Logger;
  /** For the canonical lines (see canonicalLineLogger); default `logger`. */
  readonly lineLogger?: Logger;
  readonly metrics: Metrics;
  readonly limits: ProxyLimits;
}

export interface ConnectTarget {
  /** WHATWG-canonical host: lower case, IDNA, IPv4 dotted decimal, IPv6 bracketed. */
  readonly host: string;
  readonly port: number;
  /** What the policy sees: `https://<host>:<port>`, an origin and nothing more. */
  readonly url: string;
}

export interface TunnelHandler {
  handle(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** Tunnels holding a slot: being decided, connecting, or open. */
  active(): number;
  /** Refuses new tunnels, waits up to `graceMs` for open ones to end, then destroys the rest. */
  close(graceMs?: number): Promise<void>;
}

// authority-form (RFC 9112 §3.2.3): host and an explicit port, nothing else. Userinfo, paths and whitespace never
// reach the URL parser, which would otherwise quietly drop or repair them.
const AUTHORITY = /^(\[[0-9A-Fa-f:.]+\]|[^[\]:/?#@\\\s]+):([0-9]{1,5})$/;

export function parseConnectTarget(raw: string | undefined): ConnectTarget | null {
  const m = AUTHORITY.exec(raw ?? '');
  if (!m) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  let host: string;
  try {
    host = new URL(`https://${m[1]}:${port}/`).hostname;
  } catch {
    return null;
  }
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (host === '') return null;
  return { host, port, url: `https://${host}:${port}` };
}

interface Tunnel {
  readonly client: Duplex;
  upstream?: Socket;
}

const MALFORMED: ErrorCode = 'SIDECAR_ERR_REQUEST_MALFORMED';
const CONNECT_TIMEOUT = Object.assign(new Error('connect timed out'), { code: 'SIDECAR_CONNECT_TIMEOUT' });

// How long a refused CONNECT socket may stay open for the agent to read the error and hang up.
const REFUSED_LINGER_MS = 5_000;

/**
 * Writes the error response and ends our side. The socket was paused while deciding, so it is drained now (or it
 * would never see the agent hang up), and destroyed if the agent keeps it open past the linger time.
 */
function refuseSocket(socket: Duplex, code: ErrorCode, decisionId?: string): void {
  writeSocketError(socket, code, decisionId);
  if (socket.destroyed) return;
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), REFUSED_LINGER_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** Ends our side once what was written has flushed, then lets go of the socket whatever the peer still sends. */
function shut(socket: Duplex): void {
  if (socket.destroyed) return;
  if (socket.writableFinished) {
    socket.destroy();
    return;
  }
  socket.once('finish', () => socket.destroy());
  socket.end();
}

const ESTABLISHED = (decisionId: string) =>
  `HTTP/1.1 200 Connection Established\r\n${DECISION_HEADER}: ${decisionId}\r\n\r\n`;

export function createTunnelHandler(deps: TunnelDeps): TunnelHandler {
  const { enforcer, logger, metrics, limits } = deps;
  const lineLogger = deps.lineLogger ?? logger;
  const tunnels = new Set<Tunnel>();
  let closing = false;
  let drained: (() => void) | undefined;

  const release = (t: Tunnel) => {
    if (!tunnels.delete(t)) return;
    metrics.tunnels.set(tunnels.size);
    if (tunnels.size === 0) drained?.();
  };

  async function run(req: IncomingMessage, client: Duplex, head: Buffer, tunnel: Tunnel): Promise<void> {
    const started = performance.now();
    const raw = req.url ?? '';
    const target = parseConnectTarget(raw);
    const refuse = (code: ErrorCode, verdict: Verdict, upstreamError?: string) => {
      refuseSocket(client, code, verdict.decisionId);
      logProxyLine(lineLogger, enforcer.agent, {
        method: 'CONNECT',
        host: target?.host ?? null,
        port: target?.port ?? 0,
        status: ERRORS[code].status,
        bytesIn: 0,
        bytesOut: 0,
        durationMs: performance.now() - started,
        verdict,
        errorCode: code,
        ...(upstreamError ? { upstreamError } : {}),
      });
    };

    if (!target) {
      const action: NetworkAction = { type: 'network', url: `https://${raw}`, method: 'CONNECT' };
      const verdict = await enforcer.refuse({ kind: 'proxy', action }, 'malformed_action', MALFORMED);
      refuse(verdict.errorCode ?? MALFORMED, verdict);
      return;
    }

    const action: NetworkAction = { type: 'network', url: target.url, method: 'CONNECT' };
    const abort = new AbortController();
    const onGone = () => abort.abort();
    client.once('close', onGone);
    const outcome = await decideEgress(deps, action, target.host, target.port, abort.signal);
    client.off('close', onGone);
    if (!outcome.ok) {
      if (outcome.upstreamError) metrics.upstreamErrors.inc({ kind: outcome.upstreamError });
      refuse(outcome.errorCode, outcome.verdict, outcome.upstreamError);
      return;
    }
    await splice(client, head, tunnel, outcome.verdict, outcome.resolution, target, started);
  }

  function splice(
    client: Duplex,
    head: Buffer,
    tunnel: Tunnel,
    verdict: Verdict,
    resolution: Resolved,
    target: ConnectTarget,
    started: number,
  ): Promise<void> {
    return new Promise((resolve) => {
      if (client.destroyed) {
        logProxyLine(lineLogger, enforcer.agent, {
          method: 'CONNECT',
          host: target.host,
          port: target.port,
          status: 0,
          bytesIn: 0,
          bytesOut: 0,
          durationMs: performance.now() - started,
          verdict,
          reason: 'client_gone',
        });
        resolve();
        return;
      }
      const upstream = connect({
        host: resolution.pinned,
        port: target.port,
        family: resolution.pinnedFamily,
        lookup: pinnedLookup(resolution.pinned, resolution.pinnedFamily),
      });
      tunnel.upstream = upstream;
      let open = false;
      let done = false;
      let bytesIn = 0;
      let bytesOut = 0;

      /** Ends the tunnel once: an error or timeout tears both sides down, a clean close lets the other side flush. */
      const end = (reason: string, failure?: UpstreamFailure) => {
        if (done) return;
        done = true;
        if (failure) metrics.upstreamErrors.inc({ kind: failure.kind });
        if (failure && !open) refuseSocket(client, failure.code, verdict.decisionId);
        else if (failure || reason === 'idle_timeout') client.destroy();
        else shut(client);
        if (failure || reason === 'idle_timeout' || !open) upstream.destroy();
        else shut(upstream);
        const durationMs = performance.now() - started;
        if (open) {
          metrics.proxySeconds.observe({ mode: 'connect' }, durationMs / 1000);
          metrics.proxyBytes.inc({ direction: 'up' }, bytesIn);
          metrics.proxyBytes.inc({ direction: 'down' }, bytesOut);
        }
        const refused = failure !== undefined && !open;
        logProxyLine(lineLogger, enforcer.agent, {
          method: 'CONNECT',
          host: target.host,
          port: target.port,
          status: open ? 200 : refused ? ERRORS[failure.code].status : 0,
          bytesIn,
          bytesOut,
          durationMs,
          verdict,
          reason,
          ...(refused ? { errorCode: failure.code } : {}),
          ...(failure ? { upstreamError: failure.detail } : {}),
        });
        resolve();
      };

      // One timer per socket: the connect timeout until the tunnel opens, then the idle timeout.
      upstream.setTimeout(limits.connectTimeoutMs);
      upstream.on('timeout', () =>
        open ? end('idle_timeout') : end('upstream_error', classifyUpstreamError(CONNECT_TIMEOUT)),
      );
      upstream.on('error', (err) => end('upstream_error', classifyUpstreamError(err)));
      upstream.on('close', () => end('upstream_closed'));
      client.on('close', () => end(open ? 'client_closed' : 'client_gone'));

      upstream.once('connect', () => {
        if (done) return;
        open = true;
        upstream.setTimeout(limits.tunnelIdleTimeoutMs);
        if (client instanceof Socket) {
          client.setTimeout(limits.tunnelIdleTimeoutMs);
          client.on('timeout', () => end('idle_timeout'));
        }
        client.write(ESTABLISHED(verdict.decisionId));
        if (head.length > 0) {
          bytesIn += head.length;
          upstream.write(head);
        }
        // pipe() carries a half-close (FIN) across; a full close of either side ends the tunnel.
        client.pipe(upstream);
        upstream.pipe(client);
        client.on('data', (chunk: Buffer) => {
          bytesIn += chunk.length;
        });
        upstream.on('data', (chunk: Buffer) => {
          bytesOut += chunk.length;
        });
      });
    });
  }

  return {
    handle(req, client, head) {
      // Hold whatever the agent sends after the CONNECT head until the tunnel is decided and spliced.
      client.pause();
      client.on('error', () => {});
      if (closing || tunnels.size >= limits.maxTunnels) {
        const code: ErrorCode = closing ? 'SIDECAR_ERR_SHUTTING_DOWN' : 'SIDECAR_ERR_TUNNEL_LIMIT';
        refuseSocket(client, code);
        const target = parseConnectTarget(req.url ?? '');
        logProxyLine(lineLogger, enforcer.agent, {
          method: 'CONNECT',
          host: target?.host ?? null,
          port: target?.port ?? 0,
          status: ERRORS[code].status,
          bytesIn: 0,
          bytesOut: 0,
          durationMs: 0,
          reason: closing ? 'shutting_down' : 'tunnel_limit',
          errorCode: code,
        });
        return;
      }
      const tunnel: Tunnel = { client };
      tunnels.add(tunnel);
      metrics.tunnels.set(tunnels.size);
      run(req, client, head, tunnel)
        .catch((err: unknown) => {
          logger.error({ err }, 'tunnel failed');
          refuseSocket(client, 'SIDECAR_ERR_INTERNAL');
        })
        .finally(() => release(tunnel));
    },

    active: () => tunnels.size,

    async close(graceMs = 0) {
      closing = true;
      if (tunnels.size > 0 && graceMs > 0) {
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          drained = resolve;
          timer = setTimeout(resolve, graceMs);
        });
        clearTimeout(timer);
      }
      for (const t of tunnels) {
        t.upstream?.destroy();
        t.client.destroy();
      }
    },
  };
}
