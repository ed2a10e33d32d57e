// An agent that leaves after its whole request went upstream, but before any answer, is charged its reservation:
// the vendor already has the prompt and may bill it, so leaving early does not spend vendor money outside the budget.
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, vi } from 'vitest';
import type { ModelStub } from '../../../agents/model-stub/server.ts';
import { BASE_POLICY, type GatewayUnderTest, useStubGateway } from './support.ts';

let stub: ModelStub;
let gw: GatewayUnderTest;
useStubGateway(
  { policy: `${BASE_POLICY}budgets:\n  - { name: daily, period: day, max_tokens: 1000000 }\n` },
  (s, g) => {
    stub = s;
    gw = g;
  },
);

const budget = () => gw.gateway.spend().budgets[0];

describe('agent gone before the answer', () => {
  it.each([
    ['anthropic', '/anthropic/v1/messages', { max_tokens: 5000 }],
    ['openai', '/openai/v1/chat/completions', { max_completion_tokens: 5000 }],
  ])(
    '%s: a non-streamed call the vendor already received is charged its reservation',
    async (_v, path, limit) => {
      const before = budget()?.spent_tokens ?? 0;
      const abort = new AbortController();
      const res = fetch(`${gw.url}${path}`, {
        method: 'POST',
        signal: abort.signal,
        headers: {
          'content-type': 'application/json',
          'anthropic-version': '2023-06-01',
          'x-stub-delay-ms': '3000',
        },
        body: JSON.stringify({
          model: 'stub-slow',
          ...limit,
          messages: [{ role: 'user', content: 'x'.repeat(4000) }],
        }),
      }).catch(() => undefined);
      // The whole prompt is at the vendor, which processes (and bills) it; the answer is not back yet.
      await vi.waitFor(() => expect(stub.requests).toHaveLength(1));
      await sleep(100);
      abort.abort();
      await res;
      await vi.waitFor(() => expect(budget()?.reserved_tokens).toBe(0));
      // Charged at the reservation: at least the output limit, since the usage never arrived.
      expect((budget()?.spent_tokens ?? 0) - before).toBeGreaterThanOrEqual(5000);
      const line = gw.logs.findLast((l) => l['msg'] === 'decision' && l['kind'] === 'model');
      expect(line).toMatchObject({ reason: 'client_gone', settlement: 'charge_reserved' });
    },
  );
});
