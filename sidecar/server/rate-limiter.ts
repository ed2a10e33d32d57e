// Per-rule sliding-window rate limits (`rate_limit: {max, per}` in a rule), keyed by rule name.

const WINDOW_MS = { second: 1_000, minute: 60_000, hour: 3_600_000, day: 86_400_000 } as const;
export type RatePeriod = keyof typeof WINDOW_MS;

export class RateLimiter {
  readonly #hits = new Map<string, number[]>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  /** Records one use if under the limit; false when the window is full (nothing is recorded then). */
  take(key: string, limit: { readonly max: number; readonly per: RatePeriod }): boolean {
    const now = this.#now();
    const since = now - WINDOW_MS[limit.per];
    const hits = (this.#hits.get(key) ?? []).filter((t) => t > since);
    if (hits.length >= limit.max) {
      this.#hits.set(key, hits);
      return false;
    }
    hits.push(now);
    this.#hits.set(key, hits);
    return true;
  }
}
