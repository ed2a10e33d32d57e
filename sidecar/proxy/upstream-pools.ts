// Keep-alive connection pools to pinned upstream addresses, one per (scheme, IP, port, TLS server name).
//
// Both how long an idle upstream connection is kept and how many pools exist are bounded here, not left to the
// upstream or the agent: an agent allowed to reach many origins (a host glob over a wildcard-DNS zone, an address
// range) would otherwise leave one pool and one idle socket per origin behind, for as long as each upstream's
// `Keep-Alive: timeout=N` asks (undici honours up to 10 min by default), until file descriptors run out.
import { Pool } from 'undici';
import { type ProxyLimits, positiveOption } from './limits.ts';

/** Longest an idle upstream connection is kept, whatever `Keep-Alive: timeout=N` the upstream sends. */
export const DEFAULT_KEEP_ALIVE_MAX_TIMEOUT_MS = 5_000;
/** Most pools kept at once; past it the least recently used one is closed. Same order as `maxTunnels`. */
export const DEFAULT_MAX_POOLS = 256;

export interface UpstreamPoolsOptions {
  /** Default `DEFAULT_KEEP_ALIVE_MAX_TIMEOUT_MS`. */
  readonly keepAliveMaxTimeoutMs?: number;
  /** Default `DEFAULT_MAX_POOLS`. */
  readonly maxPools?: number;
  /** Default `new Pool(origin, options)`; tests inject one to see the options each pool is made with. */
  readonly createPool?: (origin: string, options: Pool.Options) => Pool;
}

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
  readonly #keepAliveMaxTimeoutMs: number;
  readonly #maxPools: number;
  readonly #createPool: (origin: string, options: Pool.Options) => Pool;
  /** In least-recently-used order: `get` moves the pool it hands out to the end. */
  readonly #pools = new Map<string, Pool>();
  /** Evicted pools still finishing their requests, so `destroy` can cut them too. */
  readonly #closing = new Set<Pool>();

  constructor(limits: ProxyLimits, opts: UpstreamPoolsOptions = {}) {
    this.#limits = limits;
    this.#keepAliveMaxTimeoutMs = positiveOption(
      'keepAliveMaxTimeoutMs',
      opts.keepAliveMaxTimeoutMs ?? DEFAULT_KEEP_ALIVE_MAX_TIMEOUT_MS,
    );
    this.#maxPools = positiveOption('maxPools', opts.maxPools ?? DEFAULT_MAX_POOLS);
    this.#createPool = opts.createPool ?? ((origin, options) => new Pool(origin, options));
  }

  get size(): number {
    return this.#pools.size;
  }

  get(origin: PinnedOrigin): Pool {
    const key = keyOf(origin);
    const existing = this.#pools.get(key);
    if (existing) {
      this.#pools.delete(key);
      if (!existing.closed && !existing.destroyed) {
        this.#pools.set(key, existing);
        return existing;
      }
    }
    const pool = this.#createPool(originOf(origin), {
      connect: {
        timeout: this.#limits.connectTimeoutMs,
        ...(origin.servername ? { servername: origin.servername } : {}),
      },
      headersTimeout: this.#limits.upstreamHeadersTimeoutMs,
      bodyTimeout: this.#limits.upstreamBodyTimeoutMs,
      // The idle timeout without a hint stays undici's default (4 s); a hint is honoured only up to this.
      keepAliveMaxTimeout: this.#keepAliveMaxTimeoutMs,
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
    this.#evictPastLimit();
    return pool;
  }

  /** Aborts whatever is still in flight and closes every connection. */
  async destroy(): Promise<void> {
    const pools = [...this.#pools.values(), ...this.#closing];
    this.#pools.clear();
    this.#closing.clear();
    await Promise.all(pools.map((p) => p.destroy().catch(() => {})));
  }

  /**
   * Closes the least recently used pools past `maxPools` (never the one just handed out: it is the most recent).
   * Gracefully: `close` lets requests already dispatched on the pool finish, then closes its connections.
   */
  #evictPastLimit(): void {
    for (const [key, pool] of this.#pools) {
      if (this.#pools.size <= this.#maxPools) return;
      this.#pools.delete(key);
      this.#closing.add(pool);
      pool
        .close()
        .catch(() => {})
        .finally(() => this.#closing.delete(pool));
    }
  }
}
