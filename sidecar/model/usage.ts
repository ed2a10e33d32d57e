// Token usage in one vendor-neutral shape, and its cost from the configured price table.

/** Anthropic's split: `input_tokens` excludes cache reads and writes; OpenAI's cached prompt tokens go to `cache_read`. */
export interface TokenUsage {
  readonly input_tokens: number;
  readonly output_tokens: number;
  readonly cache_creation_input_tokens: number;
  readonly cache_read_input_tokens: number;
}

export const ZERO_USAGE: TokenUsage = Object.freeze({
  input_tokens: 0,
  output_tokens: 0,
  cache_creation_input_tokens: 0,
  cache_read_input_tokens: 0,
});

/** Every token the call was billed for: what a `max_tokens` budget counts. */
export function totalTokens(u: TokenUsage): number {
  return u.input_tokens + u.output_tokens + u.cache_creation_input_tokens + u.cache_read_input_tokens;
}

/** US dollars per million tokens. Cache prices default to the input price (over-, never under-estimating reads). */
export interface ModelPrice {
  readonly input_per_mtok: number;
  readonly output_per_mtok: number;
  readonly cache_write_per_mtok?: number;
  readonly cache_read_per_mtok?: number;
}

/**
 * Prices by model name. A key is an exact model name, or a prefix ending in `*` (`claude-haiku-4-5*` covers dated
 * snapshots); an exact key wins, then the longest prefix.
 */
export class PriceTable {
  readonly #exact = new Map<string, ModelPrice>();
  readonly #prefixes: Array<readonly [string, ModelPrice]> = [];

  constructor(prices: Readonly<Record<string, ModelPrice>> = {}) {
    for (const [key, price] of Object.entries(prices)) {
      if (key.endsWith('*')) this.#prefixes.push([key.slice(0, -1), price]);
      else this.#exact.set(key, price);
    }
    this.#prefixes.sort((a, b) => b[0].length - a[0].length);
  }

  lookup(model: string): ModelPrice | undefined {
    return this.#exact.get(model) ?? this.#prefixes.find(([prefix]) => model.startsWith(prefix))?.[1];
  }

  /** Cost in USD, or null when the model has no price. */
  cost(model: string, u: TokenUsage): number | null {
    const p = this.lookup(model);
    if (!p) return null;
    return (
      (u.input_tokens * p.input_per_mtok +
        u.output_tokens * p.output_per_mtok +
        u.cache_creation_input_tokens * (p.cache_write_per_mtok ?? p.input_per_mtok) +
        u.cache_read_input_tokens * (p.cache_read_per_mtok ?? p.input_per_mtok)) /
      1_000_000
    );
  }

  /**
   * The most a call can cost before it is made: `inputTokens` priced at the dearer of input and cache-write rates,
   * plus `maxOutputTokens` at the output rate. Null when the model has no price.
   */
  ceiling(model: string, inputTokens: number, maxOutputTokens: number): number | null {
    const p = this.lookup(model);
    if (!p) return null;
    const inputRate = Math.max(p.input_per_mtok, p.cache_write_per_mtok ?? 0);
    return (inputTokens * inputRate + maxOutputTokens * p.output_per_mtok) / 1_000_000;
  }
}

/** A non-negative integer from vendor JSON, or 0. */
export function count(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.floor(v) : 0;
}

/** A token count the vendor must report: a non-negative integer, or undefined when it is missing or unreadable. */
export function requiredCount(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : undefined;
}
