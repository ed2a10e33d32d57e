// Name lookups the address guard starts are bounded: at most `maxConcurrentLookups` (default 2) at once, and a lookup
// a request stopped waiting for (its timeout) still counts until it really settles, so a later request for that
// name joins it instead of starting another. getaddrinfo runs on libuv's thread pool (4 threads by default) and
// cannot be cancelled; the same threads serve the audit log's fdatasync, file I/O and WebCrypto. Without the bound,
// a hostile agent whose policy lets names through the pre-DNS pass (a host glob over a zone whose nameserver it
// controls and answers slowly) parks every thread on resolver timeouts and stalls the sidecar's audit writes.
// Past the limit a request waits for a slot within its own timeout, and past 64 waiting it is refused at once as a
// DNS failure (fail closed; nothing grows without bound).
//
// The lookup is injected and never returns unless the test says so, standing in for a stuck getaddrinfo; what is
// counted is how many such calls the guard has outstanding. Timeouts run on fake timers: nothing waits for real.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  AddressGuard,
  DEFAULT_MAX_CONCURRENT_LOOKUPS,
  DEFAULT_MAX_WAITING_LOOKUPS,
  type GuardResolution,
  type HostLookup,
  type LookupAnswer,
} from '../../../sidecar/proxy/address-guard.ts';

/** libuv's default thread-pool size. */
const UV_THREADPOOL = 4;
/** The guard's default limit on lookups in flight. */
const DEFAULT_LIMIT = 2;
const TIMEOUT_MS = 1000;

interface StuckLookups {
  lookup: HostLookup;
  /** Calls started and not yet settled. */
  outstanding: () => number;
  asked: string[];
  /** Settles the oldest outstanding call for `host`. */
  answer: (host: string, result: ReadonlyArray<LookupAnswer> | Error) => void;
}

function stuckLookups(): StuckLookups {
  const asked: string[] = [];
  const waiting: Array<{ host: string; settle: (r: ReadonlyArray<LookupAnswer> | Error) => void }> = [];
  const lookup: HostLookup = (host) => {
    asked.push(host);
    return new Promise((resolve, reject) => {
      waiting.push({ host, settle: (r) => (r instanceof Error ? reject(r) : resolve(r)) });
    });
  };
  return {
    lookup,
    asked,
    outstanding: () => waiting.length,
    answer: (host, result) => {
      const i = waiting.findIndex((w) => w.host === host);
      if (i < 0) throw new Error(`no lookup of ${host} outstanding`);
      const [w] = waiting.splice(i, 1);
      w?.settle(result);
    },
  };
}

/** Whether `p` settled with no timer firing: one real macrotask turn lets every microtask run first. */
async function settledWithoutTimers(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  await new Promise((resolve) => setImmediate(resolve));
  return settled;
}

/** Resolves `host`, letting its timeout fire if it waits on a lookup. */
async function resolveLettingTimeoutFire(guard: AddressGuard, host: string): Promise<GuardResolution> {
  const pending = guard.resolve(host, 443);
  await vi.advanceTimersByTimeAsync(TIMEOUT_MS);
  return pending;
}

beforeEach(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
});

afterEach(() => {
  vi.useRealTimers();
});

describe('lookups that never return hold at most the configured number of threads', () => {
  const names = (n: number, f: (i: number) => string) => Array.from({ length: n }, (_, i) => f(i));
  it.each([
    {
      note: '64 distinct names at once',
      hosts: names(64, (i) => `n${i}.slow.example`),
      together: true,
      outstanding: DEFAULT_LIMIT,
    },
    {
      note: '64 distinct names, each after the previous one timed out',
      hosts: names(64, (i) => `n${i}.slow.example`),
      together: false,
      outstanding: DEFAULT_LIMIT,
    },
    {
      note: 'one name asked 10 times, each after the previous one timed out',
      hosts: names(10, () => 'hang.slow.example'),
      together: false,
      outstanding: 1,
    },
    {
      note: 'one name asked 10 times at once',
      hosts: names(10, () => 'hang.slow.example'),
      together: true,
      outstanding: 1,
    },
  ])('$note: $outstanding outstanding, every request refused as dns_failed', async (c) => {
    const l = stuckLookups();
    const guard = new AddressGuard({ lookup: l.lookup, lookupTimeoutMs: TIMEOUT_MS });
    const answers: GuardResolution[] = [];
    if (c.together) {
      const all = Promise.all(c.hosts.map((h) => guard.resolve(h, 443)));
      await vi.advanceTimersByTimeAsync(TIMEOUT_MS);
      answers.push(...(await all));
    } else {
      for (const h of c.hosts) answers.push(await resolveLettingTimeoutFire(guard, h));
    }
    expect(answers.every((a) => !a.ok && a.reason === 'dns_failed')).toBe(true);
    expect(l.outstanding()).toBe(c.outstanding);
    expect(l.outstanding()).toBeLessThan(UV_THREADPOOL);
  });
});

describe('the lookup limit', () => {
  it('a request that needs a lookup past the limit waits for a slot, and gets it when a lookup settles', async () => {
    const l = stuckLookups();
    const guard = new AddressGuard({
      lookup: l.lookup,
      lookupTimeoutMs: TIMEOUT_MS,
      maxConcurrentLookups: 1,
    });
    const first = guard.resolve('first.example', 443);
    const second = guard.resolve('second.example', 443);
    await vi.advanceTimersByTimeAsync(TIMEOUT_MS / 4);
    expect(l.asked).toEqual(['first.example']);
    l.answer('first.example', [{ address: '1.1.1.1', family: 4 }]);
    await vi.advanceTimersByTimeAsync(0);
    expect(l.asked).toEqual(['first.example', 'second.example']);
    l.answer('second.example', [{ address: '8.8.8.8', family: 4 }]);
    expect(await first).toMatchObject({ ok: true, pinned: '1.1.1.1' });
    expect(await second).toMatchObject({ ok: true, pinned: '8.8.8.8' });
  });

  it('a waiting request that gets no slot in its own time is refused, and leaves the wait list', async () => {
    const l = stuckLookups();
    const guard = new AddressGuard({
      lookup: l.lookup,
      lookupTimeoutMs: TIMEOUT_MS,
      maxConcurrentLookups: 1,
    });
    const busy = guard.resolve('stuck.example', 443);
    const waiting = guard.resolve('waits.example', 443);
    await vi.advanceTimersByTimeAsync(TIMEOUT_MS);
    expect(await waiting).toMatchObject({ ok: false, reason: 'dns_failed' });
    await busy;
    l.answer('stuck.example', [{ address: '1.1.1.1', family: 4 }]);
    await vi.advanceTimersByTimeAsync(0);
    // The timed-out waiter took no slot when one came free.
    expect(l.asked).toEqual(['stuck.example']);
  });

  it('one request more than maxWaitingLookups is refused at once, as a DNS failure, never asked', async () => {
    const l = stuckLookups();
    const guard = new AddressGuard({
      lookup: l.lookup,
      lookupTimeoutMs: TIMEOUT_MS,
      maxConcurrentLookups: 1,
      maxWaitingLookups: 2,
    });
    const held = ['busy.example', 'w1.example', 'w2.example'].map((h) => guard.resolve(h, 443));
    const refused = guard.resolve('one-more.example', 443);
    expect(await settledWithoutTimers(refused)).toBe(true);
    const got = await refused;
    expect(got).toMatchObject({ ok: false, reason: 'dns_failed' });
    if (!got.ok)
      expect(got.detail).toBe('one-more.example: not looked up: 1 lookups in flight and 2 waiting');
    expect(l.asked).toEqual(['busy.example']);
    await vi.advanceTimersByTimeAsync(TIMEOUT_MS);
    await Promise.all(held);
  });

  it('waits for at most 64 by default', () => {
    expect(DEFAULT_MAX_WAITING_LOOKUPS).toBe(64);
  });

  it('requests that join a lookup in flight do not count against the limit', async () => {
    const l = stuckLookups();
    const guard = new AddressGuard({
      lookup: l.lookup,
      lookupTimeoutMs: TIMEOUT_MS,
      maxConcurrentLookups: 1,
    });
    const three = [1, 2, 3].map(() => guard.resolve('shared.example', 443));
    await vi.advanceTimersByTimeAsync(0);
    l.answer('shared.example', [{ address: '8.8.8.8', family: 4 }]);
    for (const got of await Promise.all(three)) expect(got).toMatchObject({ ok: true, pinned: '8.8.8.8' });
    expect(l.asked).toEqual(['shared.example']);
  });

  it('a request joining a lookup that timed out for an earlier one gets the answer if it lands in its own time', async () => {
    const l = stuckLookups();
    const guard = new AddressGuard({ lookup: l.lookup, lookupTimeoutMs: TIMEOUT_MS });
    const first = await resolveLettingTimeoutFire(guard, 'late.example');
    expect(first).toMatchObject({ ok: false, reason: 'dns_failed' });
    if (!first.ok) expect(first.detail).toMatch(/timed out/);

    const second = guard.resolve('late.example', 443);
    await vi.advanceTimersByTimeAsync(TIMEOUT_MS / 2);
    l.answer('late.example', [{ address: '8.8.4.4', family: 4 }]);
    await vi.advanceTimersByTimeAsync(TIMEOUT_MS);
    expect(await second).toMatchObject({ ok: true, pinned: '8.8.4.4' });
    expect(l.asked).toEqual(['late.example']);
  });

  it('once a stuck lookup settles its slot is free again, and the next request for the name asks again', async () => {
    const l = stuckLookups();
    const guard = new AddressGuard({
      lookup: l.lookup,
      lookupTimeoutMs: TIMEOUT_MS,
      maxConcurrentLookups: 1,
    });
    expect(await resolveLettingTimeoutFire(guard, 'stuck.example')).toMatchObject({ ok: false });
    // Waits for the slot the stuck lookup still holds, and times out.
    const refused = await resolveLettingTimeoutFire(guard, 'other.example');
    expect(refused).toMatchObject({ ok: false, reason: 'dns_failed' });
    if (!refused.ok) expect(refused.detail).toMatch(/timed out/);

    l.answer('stuck.example', Object.assign(new Error('resolver gave up'), { code: 'EAI_AGAIN' }));
    await vi.advanceTimersByTimeAsync(0);
    const other = guard.resolve('other.example', 443);
    await vi.advanceTimersByTimeAsync(0);
    l.answer('other.example', [{ address: '1.1.1.1', family: 4 }]);
    expect(await other).toMatchObject({ ok: true, pinned: '1.1.1.1' });

    const again = guard.resolve('stuck.example', 443);
    await vi.advanceTimersByTimeAsync(0);
    l.answer('stuck.example', [{ address: '9.9.9.9', family: 4 }]);
    expect(await again).toMatchObject({ ok: true, pinned: '9.9.9.9' });
    expect(l.asked).toEqual(['stuck.example', 'other.example', 'stuck.example']);
  });

  it('leaves libuv threads free by default', () => {
    expect(DEFAULT_MAX_CONCURRENT_LOOKUPS).toBe(DEFAULT_LIMIT);
    expect(DEFAULT_LIMIT).toBeLessThan(UV_THREADPOOL);
  });

  it.each([0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY])(
    'refuses maxConcurrentLookups and maxWaitingLookups %s',
    (max) => {
      expect(() => new AddressGuard({ maxConcurrentLookups: max })).toThrow(RangeError);
      expect(() => new AddressGuard({ maxWaitingLookups: max })).toThrow(RangeError);
    },
  );
});
