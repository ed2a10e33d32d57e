// Per-agent budget accounting with up-front reservations, so concurrent calls can never together overshoot a budget.
import type { BudgetInfo } from '../policy/policy.ts';
import { type TokenUsage, totalTokens, ZERO_USAGE } from './usage.ts';

/** An amount of spend: tokens, and USD when the model has a price (null when it has none). */
export interface Amount {
  readonly tokens: number;
  readonly usd: number | null;
}

/** One budget's state in its current period. Reserved amounts belong to calls still in flight. */
export interface BudgetState {
  readonly period: 'day' | 'month';
  /** `YYYY-MM-DD` or `YYYY-MM`, UTC. */
  readonly key: string;
  readonly spent_tokens: number;
  readonly spent_usd: number;
  readonly reserved_tokens: number;
  readonly reserved_usd: number;
}

/** Lifetime totals for one model. */
export interface ModelTotals extends TokenUsage {
  readonly requests: number;
  /** Cost of the priced calls; calls without a price are counted in `unpriced_requests` only. */
  readonly cost_usd: number;
  readonly unpriced_requests: number;
}

/** Everything the spend file holds (see spend-file.ts). */
export interface SpendState {
  readonly budgets: Readonly<Record<string, BudgetState>>;
  readonly models: Readonly<Record<string, ModelTotals>>;
}

export type ReserveResult =
  | { readonly ok: true; readonly reservation: Reservation }
  | {
      readonly ok: false;
      /** `budget_exceeded`, or `budget_unpriced_model` when a USD budget is in force and the model has no price. */
      readonly reason: 'budget_exceeded' | 'budget_unpriced_model';
      readonly budget: string;
    };

export interface Reservation {
  readonly entries: ReadonlyArray<{
    readonly budget: string;
    /** The budget's period when the call reserved; settling follows the budget's current period instead. */
    readonly period: 'day' | 'month';
    readonly amount: Amount;
  }>;
  readonly amount: Amount;
}

/** The outcome of a call, for settling its reservation. */
export type Settlement =
  | {
      readonly kind: 'usage';
      readonly model: string;
      readonly usage: TokenUsage;
      readonly usd: number | null;
    }
  /** The call failed before anything could be billed (upstream down, vendor error): nothing is charged. */
  | { readonly kind: 'release' }
  /** The call may have been billed but its usage is unknown (stream cut short): the whole reservation is charged. */
  | { readonly kind: 'charge_reserved'; readonly model: string };

// Floating-point sums of dollar amounts must not refuse a call that fits exactly.
const EPSILON = 1e-9;
const MAX_MODELS = 1000;
const OTHER_MODELS = '(other)';

export function periodKey(period: 'day' | 'month', now: Date): string {
  const iso = now.toISOString();
  return period === 'day' ? iso.slice(0, 10) : iso.slice(0, 7);
}

/** The current day and month keys, valid while the clock stays inside [from, until). */
interface PeriodKeys {
  readonly day: string;
  readonly month: string;
  readonly from: number;
  readonly until: number;
}

function periodKeys(now: Date): PeriodKeys {
  const from = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return { day: periodKey('day', now), month: periodKey('month', now), from, until: from + 86_400_000 };
}

const emptyTotals = (): ModelTotals => ({ ...ZERO_USAGE, requests: 0, cost_usd: 0, unpriced_requests: 0 });

/**
 * Holds spend per budget and period. `reserve` checks every budget and reserves on all of them in one synchronous
 * step, so no other call can slip between the check and the reservation. A period rolls over when the injected clock
 * says so: spend starts again at zero, reservations in flight carry over and are charged to the period in which their
 * calls finish.
 */
export class SpendLedger {
  readonly #now: () => Date;
  readonly #onChange: () => void;
  readonly #budgets = new Map<string, BudgetState>();
  readonly #models = new Map<string, ModelTotals>();
  // Formatting the date is most of a reservation's cost; the keys change once a day.
  #keys: PeriodKeys | undefined;

  constructor(opts: { now: () => Date; onChange?: () => void; initial?: SpendState }) {
    this.#now = opts.now;
    this.#onChange = opts.onChange ?? (() => {});
    for (const [name, s] of Object.entries(opts.initial?.budgets ?? {})) {
      // Reservations in a stored state belong to calls that were in flight when the process died; their usage is
      // unknown, so they are charged in full.
      this.#budgets.set(name, {
        ...s,
        spent_tokens: s.spent_tokens + s.reserved_tokens,
        spent_usd: s.spent_usd + s.reserved_usd,
        reserved_tokens: 0,
        reserved_usd: 0,
      });
    }
    for (const [model, t] of Object.entries(opts.initial?.models ?? {})) this.#models.set(model, { ...t });
  }

  reserve(budgets: readonly BudgetInfo[], amount: Amount): ReserveResult {
    if (budgets.length === 0) {
      return { ok: true, reservation: { entries: [], amount } };
    }
    const keys = this.#periodKeys();
    const states = budgets.map((b) => this.#current(b.name, b.period, keys));
    for (const [i, b] of budgets.entries()) {
      const s = states[i] as BudgetState;
      if (b.maxTokens !== undefined && s.spent_tokens + s.reserved_tokens + amount.tokens > b.maxTokens) {
        return { ok: false, reason: 'budget_exceeded', budget: b.name };
      }
      if (b.maxUsd !== undefined) {
        if (amount.usd === null) return { ok: false, reason: 'budget_unpriced_model', budget: b.name };
        if (s.spent_usd + s.reserved_usd + amount.usd > b.maxUsd + EPSILON) {
          return { ok: false, reason: 'budget_exceeded', budget: b.name };
        }
      }
    }
    const usd = amount.usd ?? 0;
    for (const [i, b] of budgets.entries()) {
      const s = states[i] as BudgetState;
      this.#budgets.set(b.name, {
        ...s,
        reserved_tokens: s.reserved_tokens + amount.tokens,
        reserved_usd: s.reserved_usd + usd,
      });
    }
    if (budgets.length > 0) this.#onChange();
    return {
      ok: true,
      reservation: { entries: budgets.map((b) => ({ budget: b.name, period: b.period, amount })), amount },
    };
  }

  /** Releases the reservation and charges what the call actually used. Call exactly once per reservation. */
  settle(reservation: Reservation, outcome: Settlement): void {
    const charged: Amount =
      outcome.kind === 'usage'
        ? { tokens: totalTokens(outcome.usage), usd: outcome.usd }
        : outcome.kind === 'charge_reserved'
          ? reservation.amount
          : { tokens: 0, usd: 0 };
    const keys = reservation.entries.length > 0 ? this.#periodKeys() : undefined;
    for (const { budget, period, amount } of reservation.entries) {
      // The budget's own period, not the one it had at reservation: a reload that changed the period since then
      // started a new state (carrying this reservation), and settling must not swap it back and wipe its spend.
      const s = this.#current(budget, this.#budgets.get(budget)?.period ?? period, keys as PeriodKeys);
      this.#budgets.set(budget, {
        ...s,
        reserved_tokens: Math.max(0, s.reserved_tokens - amount.tokens),
        reserved_usd: Math.max(0, s.reserved_usd - (amount.usd ?? 0)),
        spent_tokens: s.spent_tokens + charged.tokens,
        spent_usd: s.spent_usd + (charged.usd ?? 0),
      });
    }
    if (outcome.kind !== 'release') this.#count(outcome, reservation.amount);
    this.#onChange();
  }

  /** The state of each budget in its current period (a budget never used shows zeros). */
  budgets(budgets: readonly BudgetInfo[]): Array<BudgetInfo & BudgetState> {
    const keys = this.#periodKeys();
    return budgets.map((b) => ({ ...b, ...this.#current(b.name, b.period, keys) }));
  }

  /** What the spend file stores. */
  state(): SpendState {
    return {
      budgets: Object.fromEntries([...this.#budgets].map(([name, s]) => [name, { ...s }])),
      models: Object.fromEntries([...this.#models].map(([model, t]) => [model, { ...t }])),
    };
  }

  #periodKeys(): PeriodKeys {
    const now = this.#now();
    const t = now.getTime();
    const k = this.#keys;
    if (k !== undefined && t >= k.from && t < k.until) return k;
    this.#keys = periodKeys(now);
    return this.#keys;
  }

  #current(name: string, period: 'day' | 'month', keys: PeriodKeys): BudgetState {
    const key = keys[period];
    const s = this.#budgets.get(name);
    if (s && s.key === key && s.period === period) return s;
    const rolled: BudgetState = {
      period,
      key,
      spent_tokens: 0,
      spent_usd: 0,
      reserved_tokens: s?.reserved_tokens ?? 0,
      reserved_usd: s?.reserved_usd ?? 0,
    };
    this.#budgets.set(name, rolled);
    return rolled;
  }

  #count(outcome: Exclude<Settlement, { kind: 'release' }>, reserved: Amount): void {
    const key =
      this.#models.has(outcome.model) || this.#models.size < MAX_MODELS ? outcome.model : OTHER_MODELS;
    const t = this.#models.get(key) ?? emptyTotals();
    if (outcome.kind === 'usage') {
      const u = outcome.usage;
      this.#models.set(key, {
        requests: t.requests + 1,
        input_tokens: t.input_tokens + u.input_tokens,
        output_tokens: t.output_tokens + u.output_tokens,
        cache_creation_input_tokens: t.cache_creation_input_tokens + u.cache_creation_input_tokens,
        cache_read_input_tokens: t.cache_read_input_tokens + u.cache_read_input_tokens,
        cost_usd: t.cost_usd + (outcome.usd ?? 0),
        unpriced_requests: t.unpriced_requests + (outcome.usd === null ? 1 : 0),
      });
    } else {
      // Usage unknown: the reservation's estimate stands in, booked as input so the totals still add up.
      this.#models.set(key, {
        ...t,
        requests: t.requests + 1,
        input_tokens: t.input_tokens + reserved.tokens,
        cost_usd: t.cost_usd + (reserved.usd ?? 0),
        unpriced_requests: t.unpriced_requests + (reserved.usd === null ? 1 : 0),
      });
    }
  }
}
