// SpendLedger across a policy reload that changes a budget's period: a call reserved under the old period settles
// against the budget as it is now, so the spend charged under the new period stays and the budget is not handed out
// again.
import { describe, expect, it } from 'vitest';
import { type Amount, type Reservation, SpendLedger } from '../../../sidecar/model/ledger.ts';
import type { TokenUsage } from '../../../sidecar/model/usage.ts';
import type { BudgetInfo } from '../../../sidecar/policy/policy.ts';

const usage = (input: number, output: number): TokenUsage => ({
  input_tokens: input,
  output_tokens: output,
  cache_creation_input_tokens: 0,
  cache_read_input_tokens: 0,
});

function reserve(ledger: SpendLedger, budgets: readonly BudgetInfo[], amount: Amount): Reservation {
  const r = ledger.reserve(budgets, amount);
  if (!r.ok) throw new Error(`refused: ${r.reason}`);
  return r.reservation;
}

const daily: BudgetInfo = { name: 'b', period: 'day', maxTokens: 1000 };
const monthly: BudgetInfo = { name: 'b', period: 'month', maxTokens: 1000 };

describe('SpendLedger across a reload that changes a budget period', () => {
  it('keeps the spend charged under the new period when a call reserved under the old one settles', () => {
    const now = new Date('2026-05-05T10:00:00Z');
    const ledger = new SpendLedger({ now: () => now });

    // A call starts under the old policy (period: day) ...
    const old = reserve(ledger, [daily], { tokens: 100, usd: null });
    // ... the policy is reloaded with period: month (spend starts again, as documented) ...
    const next = reserve(ledger, [monthly], { tokens: 100, usd: null });
    ledger.settle(next, { kind: 'usage', model: 'm', usage: usage(400, 100), usd: null });
    expect(ledger.budgets([monthly])[0]).toMatchObject({ spent_tokens: 500, reserved_tokens: 100 });
    // ... and then the call that started before the reload finishes: charged to the month, its reservation released.
    ledger.settle(old, { kind: 'usage', model: 'm', usage: usage(50, 10), usd: null });

    expect(ledger.budgets([monthly])[0]).toMatchObject({
      period: 'month',
      key: '2026-05',
      spent_tokens: 560,
      reserved_tokens: 0,
    });
    expect(ledger.reserve([monthly], { tokens: 900, usd: null })).toMatchObject({
      ok: false,
      reason: 'budget_exceeded',
    });
  });

  it('releases an old-period reservation that fails into the new period, without touching its spend', () => {
    const now = new Date('2026-05-05T10:00:00Z');
    const ledger = new SpendLedger({ now: () => now });
    const old = reserve(ledger, [monthly], { tokens: 300, usd: null });
    const next = reserve(ledger, [daily], { tokens: 200, usd: null });
    ledger.settle(next, { kind: 'usage', model: 'm', usage: usage(150, 50), usd: null });
    ledger.settle(old, { kind: 'release' });
    expect(ledger.budgets([daily])[0]).toMatchObject({
      period: 'day',
      key: '2026-05-05',
      spent_tokens: 200,
      reserved_tokens: 0,
    });
  });

  it('still rolls a budget into the next day when a call settles after midnight', () => {
    let now = new Date('2026-05-05T23:59:59Z');
    const ledger = new SpendLedger({ now: () => now });
    const call = reserve(ledger, [daily], { tokens: 100, usd: null });
    now = new Date('2026-05-06T00:00:01Z');
    ledger.settle(call, { kind: 'usage', model: 'm', usage: usage(30, 10), usd: null });
    expect(ledger.budgets([daily])[0]).toMatchObject({
      key: '2026-05-06',
      spent_tokens: 40,
      reserved_tokens: 0,
    });
  });
});
