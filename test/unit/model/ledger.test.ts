// The spend ledger: reservations against every budget at once, settlement, period rollover, crash charging; the file.
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Amount, periodKey, type Reservation, SpendLedger } from '../../../sidecar/model/ledger.ts';
import { loadSpendFile, SpendWriter } from '../../../sidecar/model/spend-file.ts';
import { PriceTable, type TokenUsage } from '../../../sidecar/model/usage.ts';
import type { BudgetInfo } from '../../../sidecar/policy/policy.ts';

const usage = (input: number, output: number): TokenUsage => ({
  input_tokens: input,
  output_tokens: output,
  cache_creation_input_tokens: 0,
  cache_read_input_tokens: 0,
});

function clock(iso: string) {
  let now = new Date(iso);
  return { now: () => now, set: (next: string) => (now = new Date(next)) };
}

function reserve(ledger: SpendLedger, budgets: readonly BudgetInfo[], amount: Amount): Reservation {
  const r = ledger.reserve(budgets, amount);
  if (!r.ok) throw new Error(`refused: ${r.reason}`);
  return r.reservation;
}

const tokens100: BudgetInfo = { name: 'tokens', period: 'day', maxTokens: 100 };
const usd1: BudgetInfo = { name: 'usd', period: 'month', maxUsd: 1 };

describe('SpendLedger.reserve', () => {
  const CASES: ReadonlyArray<{
    note: string;
    budgets: BudgetInfo[];
    held: Amount[];
    ask: Amount;
    want: 'ok' | 'budget_exceeded' | 'budget_unpriced_model';
  }> = [
    {
      note: 'fits an empty budget',
      budgets: [tokens100],
      held: [],
      ask: { tokens: 100, usd: 0 },
      want: 'ok',
    },
    {
      note: 'one token too many',
      budgets: [tokens100],
      held: [],
      ask: { tokens: 101, usd: 0 },
      want: 'budget_exceeded',
    },
    {
      note: 'reservations in flight count',
      budgets: [tokens100],
      held: [{ tokens: 60, usd: 0 }],
      ask: { tokens: 41, usd: 0 },
      want: 'budget_exceeded',
    },
    {
      note: 'USD fits exactly despite float sums',
      budgets: [usd1],
      held: [
        { tokens: 1, usd: 0.1 },
        { tokens: 1, usd: 0.2 },
      ],
      ask: { tokens: 1, usd: 0.7 },
      want: 'ok',
    },
    {
      note: 'USD over',
      budgets: [usd1],
      held: [{ tokens: 1, usd: 0.5 }],
      ask: { tokens: 1, usd: 0.51 },
      want: 'budget_exceeded',
    },
    {
      note: 'unpriced against a USD budget',
      budgets: [usd1],
      held: [],
      ask: { tokens: 1, usd: null },
      want: 'budget_unpriced_model',
    },
    {
      note: 'unpriced against a token budget',
      budgets: [tokens100],
      held: [],
      ask: { tokens: 1, usd: null },
      want: 'ok',
    },
    {
      note: 'every budget must fit',
      budgets: [tokens100, usd1],
      held: [],
      ask: { tokens: 50, usd: 2 },
      want: 'budget_exceeded',
    },
    { note: 'no budgets', budgets: [], held: [], ask: { tokens: 1e12, usd: null }, want: 'ok' },
  ];

  it.each(CASES)('$note', ({ budgets, held, ask, want }) => {
    const ledger = new SpendLedger({ now: () => new Date('2025-05-05T10:00:00Z') });
    for (const h of held) reserve(ledger, budgets, h);
    const r = ledger.reserve(budgets, ask);
    expect(r.ok ? 'ok' : r.reason).toBe(want);
  });

  it('refuses atomically: a refused call reserves nothing on any budget', () => {
    const ledger = new SpendLedger({ now: () => new Date('2025-05-05T10:00:00Z') });
    expect(ledger.reserve([tokens100, usd1], { tokens: 10, usd: 5 }).ok).toBe(false);
    expect(ledger.budgets([tokens100, usd1]).map((b) => b.reserved_tokens)).toEqual([0, 0]);
  });
});

describe('SpendLedger.settle', () => {
  it('releases the reservation and charges the real usage', () => {
    const ledger = new SpendLedger({ now: () => new Date('2025-05-05T10:00:00Z') });
    const r = reserve(ledger, [tokens100], { tokens: 80, usd: 0.8 });
    ledger.settle(r, { kind: 'usage', model: 'm', usage: usage(10, 5), usd: 0.01 });
    expect(ledger.budgets([tokens100])[0]).toMatchObject({ spent_tokens: 15, reserved_tokens: 0 });
    expect(ledger.state().models['m']).toMatchObject({
      requests: 1,
      input_tokens: 10,
      output_tokens: 5,
      cost_usd: 0.01,
    });
  });

  it.each([
    ['release', { kind: 'release' } as const, 0],
    ['charge_reserved', { kind: 'charge_reserved', model: 'm' } as const, 80],
  ])('%s', (_n, outcome, spent) => {
    const ledger = new SpendLedger({ now: () => new Date('2025-05-05T10:00:00Z') });
    const r = reserve(ledger, [tokens100], { tokens: 80, usd: null });
    ledger.settle(r, outcome);
    expect(ledger.budgets([tokens100])[0]).toMatchObject({ spent_tokens: spent, reserved_tokens: 0 });
  });

  it('rolls over at the UTC period boundary, charging a call in flight to the period it ends in', () => {
    const c = clock('2025-05-05T23:59:59Z');
    const ledger = new SpendLedger({ now: c.now });
    reserve(ledger, [tokens100], { tokens: 40, usd: 0 });
    const inFlight = reserve(ledger, [tokens100], { tokens: 50, usd: 0 });
    const [first] = ledger.budgets([tokens100]);
    expect(first).toMatchObject({ key: '2025-05-05', reserved_tokens: 90 });
    c.set('2025-05-06T00:00:00Z');
    // New day: spend restarts, the two calls in flight still hold their reservations.
    expect(ledger.budgets([tokens100])[0]).toMatchObject({
      key: '2025-05-06',
      spent_tokens: 0,
      reserved_tokens: 90,
    });
    ledger.settle(inFlight, { kind: 'usage', model: 'm', usage: usage(20, 10), usd: 0 });
    expect(ledger.budgets([tokens100])[0]).toMatchObject({ spent_tokens: 30, reserved_tokens: 40 });
  });

  it.each([
    ['day', '2024-02-29T12:00:00Z', '2024-02-29'],
    ['month', '2024-02-29T12:00:00Z', '2024-02'],
    ['day', '2024-12-31T23:59:59.999Z', '2024-12-31'],
  ] as const)('periodKey(%s, %s) = %s', (period, iso, key) => {
    expect(periodKey(period, new Date(iso))).toBe(key);
  });

  it('charges reservations left in a stored state in full (the process died mid-call)', () => {
    const ledger = new SpendLedger({
      now: () => new Date('2025-05-05T10:00:00Z'),
      initial: {
        budgets: {
          tokens: {
            period: 'day',
            key: '2025-05-05',
            spent_tokens: 10,
            spent_usd: 0,
            reserved_tokens: 30,
            reserved_usd: 0,
          },
        },
        models: {},
      },
    });
    expect(ledger.budgets([tokens100])[0]).toMatchObject({ spent_tokens: 40, reserved_tokens: 0 });
  });
});

describe('PriceTable', () => {
  const table = new PriceTable({
    'claude-haiku-4-5': { input_per_mtok: 1, output_per_mtok: 5 },
    'claude-*': {
      input_per_mtok: 3,
      output_per_mtok: 15,
      cache_write_per_mtok: 3.75,
      cache_read_per_mtok: 0.3,
    },
    'claude-opus-*': { input_per_mtok: 15, output_per_mtok: 75 },
  });
  it.each([
    ['claude-haiku-4-5', 1],
    ['claude-haiku-4-5-20251001', 3],
    ['claude-opus-4-1', 15],
    ['claude-sonnet-4-5', 3],
  ])('%s is priced at input %d/Mtok (exact key, then longest prefix)', (model, input) => {
    expect(table.lookup(model)?.input_per_mtok).toBe(input);
  });
  it('prices cache reads and writes, and knows no price for an unknown model', () => {
    const u = {
      input_tokens: 1e6,
      output_tokens: 1e6,
      cache_creation_input_tokens: 1e6,
      cache_read_input_tokens: 1e6,
    };
    expect(table.cost('claude-sonnet-4-5', u)).toBeCloseTo(3 + 15 + 3.75 + 0.3, 9);
    expect(table.cost('gpt-4o', u)).toBeNull();
    expect(table.ceiling('claude-sonnet-4-5', 1e6, 1e6)).toBeCloseTo(3.75 + 15, 9);
  });
});

describe('spend file', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'spend-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('writes atomically (no temp file left), coalesces, and loads back', async () => {
    const dir = await mkdtemp(join(root, 'case-'));
    const path = join(dir, 'sub', 'a.spend.json');
    const ledger = new SpendLedger({ now: () => new Date('2025-05-05T10:00:00Z') });
    let writes = 0;
    const writer = new SpendWriter({
      path,
      agent: 'a',
      now: () => new Date('2025-05-05T10:00:00Z'),
      state: () => {
        writes++;
        return ledger.state();
      },
      onError: (err) => {
        throw err;
      },
    });
    for (let i = 0; i < 20; i++) {
      ledger.settle(reserve(ledger, [tokens100], { tokens: 1, usd: 0 }), {
        kind: 'usage',
        model: 'm',
        usage: usage(1, 1),
        usd: 0,
      });
      writer.schedule();
    }
    await writer.flush();
    expect(writes).toBeLessThan(20);
    expect(await readdir(join(dir, 'sub'))).toEqual(['a.spend.json']);
    const loaded = await loadSpendFile(path, 'a');
    expect(loaded?.budgets['tokens']).toMatchObject({ spent_tokens: 40 });
    expect(loaded?.models['m']).toMatchObject({ requests: 20 });
    expect(JSON.parse(await readFile(path, 'utf8'))).toMatchObject({ version: 1, agent: 'a' });
  });

  it.each([
    ['not JSON', '{', 'not JSON'],
    [
      'a wrong version',
      JSON.stringify({ version: 2, agent: 'a', updated: '', budgets: {}, models: {} }),
      'invalid',
    ],
    [
      'another agent',
      JSON.stringify({ version: 1, agent: 'b', updated: '', budgets: {}, models: {} }),
      'belongs to agent "b"',
    ],
  ])('refuses to start from a spend file that is %s', async (_n, text, message) => {
    const dir = await mkdtemp(join(root, 'case-'));
    const path = join(dir, 'a.spend.json');
    await writeFile(path, text);
    await expect(loadSpendFile(path, 'a')).rejects.toMatchObject({
      code: 'SIDECAR_ERR_CONFIG_INVALID',
      message: expect.stringContaining(message),
    });
  });

  it('starts fresh when there is no spend file', async () => {
    const dir = await mkdtemp(join(root, 'case-'));
    expect(await loadSpendFile(join(dir, 'none.json'), 'a')).toBeUndefined();
  });
});
