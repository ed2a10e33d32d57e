// The agent's HTTP forward proxy: absolute-form requests forwarded to the pinned address, CONNECT handed to tunnels.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Policy } from '../policy/policy.ts';
import type { Enforcer } from '../server/enforcer-types.ts';
import { sendError } from '../server/http-errors.ts';
import { canonicalLineLogger } from '../server/log-fields.ts';
import type { Metrics } from '../server/metrics.ts';
import type { AddressGuard } from './address-guard.ts';
import { createTunnelHandler } from './connect-tunnel.ts';
import { type ExchangeContext, HttpExchange } from './http-exchange.ts';
import { type ProxyLimits, resolveProxyLimits } from './limits.ts';
import { UpstreamPools } from './upstream-pools.ts';

export type { ProxyLimits } from './limits.ts';
export { DEFAULT_PROXY_LIMITS } from './limits.ts';

export interface ForwardProxyDeps {
  readonly enforcer: Enforcer;
  /** For the pre-DNS pass only (pure evaluate, no audit). */
  readonly currentPolicy: () => Policy;
  readonly guard: AddressGuard;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly limits?: Partial<ProxyLimits>;
}

export interface ForwardProxy {
  /** An absolute-form (`http://` or `https://`) request-target. */
  handleRequest(req: IncomingMessage, res: ServerResponse): void;
  handleConnect(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  activeTunnels(): number;
  /**
   * Refuses new work, waits up to `graceMs` (default 0: the caller has already waited its grace period) for
   * requests and tunnels in flight, then cuts what is left and closes the upstream connection pools.
   */
  close(graceMs?: number): Promise<void>;
}

export function createForwardProxy(deps: ForwardProxyDeps): ForwardProxy {
  const limits = resolveProxyLimits(deps.limits);
  const pools = new UpstreamPools(limits);
  const lineLogger = canonicalLineLogger(deps.logger);
  const tunnels = createTunnelHandler({ ...deps, lineLogger, limits });
  const inflight = new Set<HttpExchange>();
  let closing = false;
  let drained: (() => void) | undefined;
  const context: ExchangeContext = {
    deps,
    limits,
    pools,
    lineLogger,
    settled(exchange) {
      inflight.delete(exchange);
      if (inflight.size === 0) drained?.();
    },
  };

  return {
    handleRequest(req, res) {
      req.on('error', noop);
      res.on('error', noop);
      if (closing) {
        sendError(res, 'SIDECAR_ERR_SHUTTING_DOWN');
        return;
      }
      const exchange = new HttpExchange(context, req, res);
      inflight.add(exchange);
      exchange.start();
    },

    handleConnect(req, socket, head) {
      tunnels.handle(req, socket, head);
    },

    activeTunnels: () => tunnels.active(),

    async close(graceMs = 0) {
      closing = true;
      const requests = (async () => {
        if (inflight.size > 0 && graceMs > 0) {
          let timer: NodeJS.Timeout | undefined;
          await new Promise<void>((resolve) => {
            drained = resolve;
            timer = setTimeout(resolve, graceMs);
          });
          clearTimeout(timer);
        }
        for (const exchange of [...inflight]) exchange.cut();
      })();
      await Promise.all([requests, tunnels.close(graceMs)]);
      await pools.destroy();
    },
  };
}

function noop(): void {}
