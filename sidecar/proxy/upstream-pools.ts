// Keep-alive connection pools to pinned upstream addresses, one per (scheme, IP, port, TLS server name).
import { Pool } from 'undici';
import type { ProxyLimits } from './limits.ts';

export interface PinnedOrigin {
  readonly scheme: 'http' | 'https';
  /** The pinned IP: nothing below this point resolves a name. */
  readonly address: string;
  readonly family: 4 | 6;
  readonly port: number;
  /** TLS server name (SNI and certificate check) for https; absent for IP literals. */
  readonly servername?: string;
}

// undici's Client drops its connection whenever the server name changes, so names that share an IP get their own
// pool rather than taking turns tearing down one another's connections.
function keyOf(o: PinnedOrigin): string {
  return `${originOf(o)}#${o.servername ?? ''}`;
}

function originOf(o: PinnedOrigin): string {
  const host = o.family === 6 ? `[${o.address}]` : o.address;
  return `${o.scheme}://${host}:${o.port}`;
}

export class UpstreamPools {
  readonly #limits: ProxyLimits;
  readonly #pools = new Map<string, Pool>();

  constructor(limits: ProxyLimits) {
    this.#limits = limits;
  }

  get size(): number {
    return this.#pools.size;
  }

  get(origin: PinnedOrigin): Pool {
    const key = keyOf(origin);
    const existing = this.#pools.get(key);
    if (existing && !existing.closed && !existing.destroyed) return existing;
    const pool = new Pool(originOf(origin), {
      connect: {
        timeout: this.#limits.connectTimeoutMs,
        ...(origin.servername ? { servername: origin.servername } : {}),
      },
      headersTimeout: this.#limits.upstreamHeadersTimeoutMs,
      bodyTimeout: this.#limits.upstreamBodyTimeoutMs,
      allowH2: false,
    });
    // Like undici's Agent: a pool with no connection and nothing queued is forgotten, so the map stays as small
    // as the set of upstreams actually in use.
    const forgetIfUnused = () => {
      if (this.#pools.get(key) !== pool) return;
      const s = pool.stats;
      if (s.connected > 0 || s.size > 0) return;
      this.#pools.delete(key);
      pool.close().catch(() => {});
    };
    pool.on('disconnect', forgetIfUnused);
    pool.on('connectionError', forgetIfUnused);
    this.#pools.set(key, pool);
    return pool;
  }

  /** Aborts whatever is still in flight and closes every connection. */
  async destroy(): Promise<void> {
    const pools = [...this.#pools.values()];
    this.#pools.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => {})));
  }
}
