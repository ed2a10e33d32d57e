// Budgets: up-front reservations under concurrency, vendor-format 429s, spend kept across restarts, period rollover.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  countInputTokens,
  countOutputTokens,
  decideReply,
  type ModelStub,
} from '../../../agents/model-stub/server.ts';
import { AGENT, BASE_POLICY, type GatewayUnderTest, sdkError, startGateway, startStub } from './support.ts';

const withBudgets = (budgets: string) => `${BASE_POLICY}budgets:\n${budgets}`;

let stub: ModelStub;
const open: GatewayUnderTest[] = [];

async function gateway(...args: Parameters<typeof startGateway> extends [string, ...infer R] ? R : never) {
  const gw = await startGateway(stub.url, ...args);
  open.push(gw);
  return gw;
}

const sent = (i: number) => (stub.requests[i]?.body ?? {}) as Record<string, unknown>;

beforeAll(async () => {
  stub = await startStub();
});
afterAll(async () => {
  for (const gw of open.splice(0)) await gw.close();
  await stub.close();
});
beforeEach(() => {
  stub.requests.length = 0;
});

describe('reservation', () => {
  it('lets at most 10 of 50 concurrent calls through a budget that fits 10', async () => {
    const text = 'x'.repeat(2000);
    const maxTokens = 30;
    const params: Anthropic.MessageCreateParamsNonStreaming = {
      model: 'stub-slow',
      max_tokens: maxTokens,
      messages: [{ role: 'user', content: text }],
    };
    // What the gateway reserves per call (body bytes / 4 + max_tokens) and what each call really uses.
    const bytes = Buffer.byteLength(JSON.stringify(params));
    const reservation = Math.ceil(bytes / 4) + maxTokens;
    const used =
      countInputTokens(params) +
      countOutputTokens(
        decideReply({ userText: text, toolResult: undefined, tools: [], toolChoice: { mode: 'auto' } }),
      );
    // The budget fits exactly 10 reservations; 11 real calls would not fit even one after another.
    const budget = 10 * reservation;
    expect(used).toBeLessThanOrEqual(reservation);
    expect(10 * used + reservation).toBeGreaterThan(budget);

    const gw = await gateway({
      policy: withBudgets(`  - { name: daily, period: day, max_tokens: ${budget} }\n`),
    });
    // stub-slow holds every admitted call open, so all 50 overlap: a check of spend alone would admit them all.
    const client = gw.anthropic({ headers: { 'x-stub-delay-ms': '300' } });
    const results = await Promise.allSettled(
      Array.from({ length: 50 }, () => client.messages.create(params)),
    );
    const ok = results.filter((r) => r.status === 'fulfilled');
    const refused = results.flatMap((r) =>
      r.status === 'rejected' ? [r.reason as InstanceType<typeof Anthropic.APIError>] : [],
    );

    expect(ok).toHaveLength(10);
    expect(refused).toHaveLength(40);
    expect(stub.requests).toHaveLength(10);
    expect(Buffer.byteLength(stub.requests[0]?.rawBody ?? '')).toBe(bytes);
    for (const err of refused) {
      expect(err.status).toBe(429);
      expect(err.error).toMatchObject({ type: 'error', error: { type: 'rate_limit_error' } });
      expect(err.message).toContain('SIDECAR_ERR_BUDGET_EXCEEDED');
      expect(err.headers?.get('x-should-retry')).toBe('false');
    }
    const [daily] = gw.gateway.spend().budgets;
    expect(daily).toMatchObject({ name: 'daily', spent_tokens: 10 * used, reserved_tokens: 0 });
    expect(daily?.spent_tokens).toBeLessThanOrEqual(budget);

    const denials = (await gw.audit()).filter((e) => e.reason === 'budget_exceeded');
    expect(denials).toHaveLength(40);
    expect(denials[0]).toMatchObject({ kind: 'model', effect: 'DENY', extra: { budget: 'daily' } });
  });

  it('answers an exhausted USD budget in each vendor format', async () => {
    const gw = await gateway({
      policy: withBudgets('  - { name: monthly-usd, period: month, max_usd: 0.000001 }\n'),
    });
    const a = await sdkError(
      gw
        .anthropic()
        .messages.create({ model: 'stub-small', max_tokens: 64, messages: [{ role: 'user', content: 'x' }] }),
    );
    expect(a.status).toBe(429);
    expect(a.error).toMatchObject({ type: 'error', error: { type: 'rate_limit_error' } });
    const o = await sdkError(
      gw
        .openai()
        .chat.completions.create({ model: 'stub-small', messages: [{ role: 'user', content: 'x' }] }),
    );
    expect(o.status).toBe(429);
    expect(o.error).toMatchObject({ type: 'insufficient_quota', code: 'SIDECAR_ERR_BUDGET_EXCEEDED' });
    expect(o.headers?.get('x-sidecar-error-code')).toBe('SIDECAR_ERR_BUDGET_EXCEEDED');
    expect(stub.requests).toHaveLength(0);
  });

  it('refuses a model without a price while a USD budget is in force (fail closed)', async () => {
    const gw = await gateway({ policy: withBudgets('  - { name: usd, period: day, max_usd: 100 }\n') });
    const err = await sdkError(
      gw.anthropic().messages.create({
        model: 'stub-unpriced',
        max_tokens: 8,
        messages: [{ role: 'user', content: 'x' }],
      }),
    );
    expect(err.status).toBe(429);
    const entry = (await gw.audit()).find((e) => e.decision_id === err.headers?.get('x-sidecar-decision-id'));
    expect(entry).toMatchObject({ reason: 'budget_unpriced_model' });
    expect(stub.requests).toHaveLength(0);
  });

  it('counts an unpriced model in tokens only when no USD budget applies', async () => {
    const gw = await gateway({
      policy: withBudgets('  - { name: tokens, period: day, max_tokens: 100000 }\n'),
    });
    await gw
      .anthropic()
      .messages.create({ model: 'stub-unpriced', max_tokens: 8, messages: [{ role: 'user', content: 'x' }] });
    await gw
      .anthropic()
      .messages.create({ model: 'stub-unpriced', max_tokens: 8, messages: [{ role: 'user', content: 'y' }] });
    expect(gw.gateway.spend().models['stub-unpriced']).toMatchObject({
      requests: 2,
      cost_usd: 0,
      unpriced_requests: 2,
    });
    expect(
      gw.logs.filter((l) => l['msg'] === 'no price for this model: tokens are counted, cost is unknown'),
    ).toHaveLength(1);
  });

  it('caps the output of an OpenAI call that names no limit, so its reservation bounds it', async () => {
    const gw = await gateway({
      policy: withBudgets('  - { name: tokens, period: day, max_tokens: 100000 }\n'),
      config: { default_max_tokens: 512 },
    });
    await gw
      .openai()
      .chat.completions.create({ model: 'stub-small', messages: [{ role: 'user', content: 'x' }] });
    await gw.openai().chat.completions.create({
      model: 'stub-small',
      max_tokens: 20,
      messages: [{ role: 'user', content: 'x' }],
    });
    expect(sent(0)['max_completion_tokens']).toBe(512);
    expect(sent(1)['max_completion_tokens']).toBeUndefined();
    expect(sent(1)['max_tokens']).toBe(20);
  });
});

describe('persistence and periods', () => {
  const params: Anthropic.MessageCreateParamsNonStreaming = {
    model: 'stub-small',
    max_tokens: 10,
    messages: [{ role: 'user', content: 'hi' }],
  };
  const call = (gw: GatewayUnderTest) => gw.anthropic().messages.create(params);
  const reserves = Math.ceil(Buffer.byteLength(JSON.stringify(params)) / 4) + 10;
  const uses =
    countInputTokens(params) +
    countOutputTokens(
      decideReply({ userText: 'hi', toolResult: undefined, tools: [], toolChoice: { mode: 'auto' } }),
    );

  it('keeps spend across a restart, from the spend file written atomically beside the audit log', async () => {
    // Room for two calls, not three.
    const policy = withBudgets(`  - { name: daily, period: day, max_tokens: ${2 * uses + reserves - 1} }\n`);
    const first = await gateway({ policy });
    await call(first);
    const spent = first.gateway.spend().budgets[0]?.spent_tokens ?? 0;
    expect(spent).toBeGreaterThan(0);
    await first.close();

    const file = JSON.parse(await readFile(join(first.dir, 'audit', `${AGENT}.spend.json`), 'utf8'));
    expect(file).toMatchObject({
      version: 1,
      agent: AGENT,
      budgets: { daily: { spent_tokens: spent, reserved_tokens: 0 } },
    });

    const second = await gateway({ policy, dir: first.dir });
    expect(second.gateway.spend().budgets[0]).toMatchObject({ spent_tokens: spent, reserved_tokens: 0 });
    await call(second);
    expect((await sdkError(call(second))).status).toBe(429);
    expect(second.gateway.spend().models['stub-small']?.requests).toBe(2);
  });

  it.each([
    ['day', '2025-03-31T23:59:00Z', '2025-04-01T00:00:01Z', '2025-03-31', '2025-04-01'],
    ['month', '2025-03-31T23:59:00Z', '2025-04-01T00:00:01Z', '2025-03', '2025-04'],
  ])('a %s budget starts again at the next UTC period', async (period, start, next, key1, key2) => {
    let now = new Date(start);
    const gw = await gateway({
      // Room for one call, not two.
      policy: withBudgets(`  - { name: cap, period: ${period}, max_tokens: ${uses + reserves - 1} }\n`),
      now: () => now,
    });
    await call(gw);
    expect(gw.gateway.spend().budgets[0]?.period_key).toBe(key1);
    expect((await sdkError(call(gw))).status).toBe(429);
    now = new Date(next);
    expect(gw.gateway.spend().budgets[0]).toMatchObject({ period_key: key2, spent_tokens: 0 });
    await call(gw);
  });
});
