// Upstream connection pools are bounded: an idle upstream connection is kept at most `keepAliveMaxTimeoutMs`
// (default 5 s) whatever `Keep-Alive: timeout=N` the upstream sends, and at most `maxPools` (default 256) pools
// exist at once, the least recently used one closed (gracefully: what it is serving finishes) when one more is
// needed. The proxy keeps one pool per (scheme, IP, port, TLS name). Without these bounds, a hostile agent allowed
// to reach many origins (a host glob over a wildcard-DNS zone it controls, or an address range) leaves one pool
// and one idle socket per origin behind for as long as each upstream asks (undici honours up to 10 min), and the
// sidecar runs out of file descriptors: audit writes, the admin API and every other agent's traffic fail with it.
//
// The pools are driven directly against a loopback upstream that asks for 600 s keep-alive; loopback addresses
// 127.0.0.x stand in for distinct origins. The keep-alive bound is checked on the options each pool is created
// with, and end to end with a small configured bound, so nothing waits seconds.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Pool } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_PROXY_LIMITS } from '../../../sidecar/proxy/limits.ts';
import {
  DEFAULT_MAX_POOLS,
  type PinnedOrigin,
  UpstreamPools,
  type UpstreamPoolsOptions,
} from '../../../sidecar/proxy/upstream-pools.ts';

let upstream: Server;
let port: number;
/** Requests the upstream holds until the test answers them. */
const held: Array<ServerResponse> = [];

beforeAll(async () => {
  upstream = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/hold') held.push(res);
    else res.end('ok');
  });
  // Node then sends `Keep-Alive: timeout=600`: the upstream asks clients to keep idle connections ten minutes.
  upstream.keepAliveTimeout = 600_000;
  upstream.listen(0, '0.0.0.0');
  await once(upstream, 'listening');
  port = (upstream.address() as AddressInfo).port;
});

afterAll(async () => {
  upstream.closeAllConnections();
  await new Promise<void>((resolve) => upstream.close(() => resolve()));
});

/** A distinct origin on the loopback upstream: 127.0.0.<i + 1>. */
function origin(i: number): PinnedOrigin {
  return { scheme: 'http', address: `127.0.0.${i + 1}`, family: 4, port };
}

/** UpstreamPools that records every pool it creates and the options it was created with. */
function recordingPools(opts: Omit<UpstreamPoolsOptions, 'createPool'> = {}) {
  const created: Array<{ origin: string; options: Pool.Options; pool: Pool }> = [];
  const pools = new UpstreamPools(DEFAULT_PROXY_LIMITS, {
    ...opts,
    createPool: (o, options) => {
      const pool = new Pool(o, options);
      created.push({ origin: o, options, pool });
      return pool;
    },
  });
  return { pools, created };
}

async function get(pool: Pool, path = '/'): Promise<string> {
  const res = await pool.request({ method: 'GET', path, headers: { host: 'upstream.test' } });
  return res.body.text();
}

describe('idle upstream connections are kept no longer than the sidecar allows', () => {
  it.each([
    { note: 'by default', opts: {}, keepAliveMaxTimeout: 5_000 },
    { note: 'when configured', opts: { keepAliveMaxTimeoutMs: 1_234 }, keepAliveMaxTimeout: 1_234 },
  ])('every pool is created with keepAliveMaxTimeout $keepAliveMaxTimeout $note', async (c) => {
    const { pools, created } = recordingPools(c.opts);
    try {
      pools.get(origin(0));
      pools.get({ ...origin(1), scheme: 'https', servername: 'tls.example' });
      expect(created).toHaveLength(2);
      for (const { options } of created) {
        expect(options.keepAliveMaxTimeout).toBe(c.keepAliveMaxTimeout);
        // Without a hint from the upstream the idle timeout stays undici's own default (4 s).
        expect(options.keepAliveTimeout).toBeUndefined();
      }
    } finally {
      await pools.destroy();
    }
  });

  it('an upstream asking for 600 s keep-alive gets its idle connection closed at the configured bound', async () => {
    const pools = new UpstreamPools(DEFAULT_PROXY_LIMITS, { keepAliveMaxTimeoutMs: 50 });
    try {
      const pool = pools.get(origin(0));
      const disconnected = once(pool, 'disconnect');
      expect(await get(pool)).toBe('ok');
      // Resolves only once undici closed the idle socket; with the upstream's hint alone that is ten minutes away.
      await disconnected;
      expect(pool.stats.connected).toBe(0);
      // And the pool, with nothing left, is forgotten.
      expect(pools.size).toBe(0);
    } finally {
      await pools.destroy();
    }
  }, 5_000);
});

describe('the number of pools is capped, least recently used closed first', () => {
  it.each([
    { note: 'in order of creation', maxPools: 3, visits: [0, 1, 2, 3, 4], kept: [2, 3, 4], created: 5 },
    {
      note: 'a pool used again is kept over older ones',
      maxPools: 3,
      visits: [0, 1, 2, 0, 3, 4],
      kept: [0, 3, 4],
      created: 5,
    },
    {
      note: 'under the cap nothing is closed',
      maxPools: 3,
      visits: [0, 1, 0, 2, 1],
      kept: [0, 1, 2],
      created: 3,
    },
    {
      note: 'an evicted origin visited again gets a new pool',
      maxPools: 1,
      visits: [0, 1, 2, 1],
      kept: [1],
      created: 4,
    },
  ])('$note (maxPools $maxPools, visits $visits)', async (c) => {
    const pools = new UpstreamPools(DEFAULT_PROXY_LIMITS, { maxPools: c.maxPools });
    try {
      const handed = new Map<number, Pool>();
      const distinct = new Set<Pool>();
      for (const i of c.visits) {
        const pool = pools.get(origin(i));
        distinct.add(pool);
        const before = handed.get(i);
        // A pool still kept is handed out again; an evicted one is replaced by a new one.
        if (before && !before.closed) expect(pool).toBe(before);
        if (before?.closed) expect(pool).not.toBe(before);
        handed.set(i, pool);
      }
      expect(pools.size).toBe(c.kept.length);
      for (const [i, pool] of handed) expect(pool.closed, `origin ${i}`).toBe(!c.kept.includes(i));
      expect(distinct.size).toBe(c.created);
    } finally {
      await pools.destroy();
    }
  });

  it('keeps 256 pools by default', async () => {
    const pools = new UpstreamPools(DEFAULT_PROXY_LIMITS);
    try {
      // Pools open no connection until used: 257 of them cost nothing here.
      const handed = Array.from({ length: 257 }, (_, i) => pools.get({ ...origin(0), port: 1 + i }));
      expect(pools.size).toBe(256);
      expect(handed.map((pool) => pool.closed)).toEqual([true, ...Array(256).fill(false)]);
      expect(DEFAULT_MAX_POOLS).toBe(256);
    } finally {
      await pools.destroy();
    }
  });

  it('after visiting more origins than the cap, no more than the cap of idle upstream connections stay open', async () => {
    const maxPools = 4;
    const pools = new UpstreamPools(DEFAULT_PROXY_LIMITS, { maxPools });
    try {
      const handed: Pool[] = [];
      for (let i = 0; i < 12; i++) {
        const pool = pools.get(origin(i));
        handed.push(pool);
        expect(await get(pool)).toBe('ok');
      }
      const evicted = handed.filter((pool) => pool.closed);
      expect(evicted).toHaveLength(12 - maxPools);
      // Wait for the evictions to finish: close() again resolves with the first one (and throws once it has).
      await Promise.all(evicted.map((pool) => (pool.destroyed ? undefined : pool.close())));
      expect(evicted.every((pool) => pool.stats.connected === 0)).toBe(true);
      const open = handed.reduce((n, pool) => n + pool.stats.connected, 0);
      expect(open).toBeLessThanOrEqual(maxPools);
    } finally {
      await pools.destroy();
    }
  });

  it('a request in flight on an evicted pool still completes', async () => {
    const pools = new UpstreamPools(DEFAULT_PROXY_LIMITS, { maxPools: 1 });
    try {
      const first = pools.get(origin(0));
      const holding = once(upstream, 'request');
      const inFlight = get(first, '/hold');
      await holding;
      expect(await get(pools.get(origin(1)))).toBe('ok');
      expect(first.closed).toBe(true);
      held.shift()?.end('held ok');
      expect(await inFlight).toBe('held ok');
    } finally {
      await pools.destroy();
    }
  });
});
