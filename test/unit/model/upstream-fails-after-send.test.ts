// A call whose whole request reached the vendor, and that then fails before any answer begins (the headers timeout
// runs out on a slow non-streamed answer, or the upstream resets), is charged its reservation, exactly as when the
// agent itself leaves at that point. Why it matters: the vendor keeps the prompt and goes on to bill the answer, so
// charging nothing would let an agent role spend outside its budget at will (ask for a long non-streamed answer from
// a slow model, let the gateway time out, repeat), and its recorded cost would miss every such call.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { describe, expect, it } from 'vitest';
import { BASE_POLICY, useScriptedUpstream } from './support.ts';

let received = 0;
const ctx = useScriptedUpstream(
  (model: string, req: IncomingMessage, _res: ServerResponse) => {
    received++;
    // stub-slow: the vendor has the whole prompt and is still generating, no headers yet. stub-reset: it drops the
    // connection after reading the request.
    if (model === 'stub-reset') req.socket.destroy();
  },
  {
    policy: `${BASE_POLICY}budgets:\n  - { name: daily, period: day, max_tokens: 1000000 }\n`,
    config: { timeouts: { headers_ms: 300 } },
  },
);

const ANTHROPIC = ['/anthropic/v1/messages', { max_tokens: 64_000 }] as const;
const OPENAI = ['/openai/v1/chat/completions', { max_completion_tokens: 64_000 }] as const;

describe('upstream failure after the request was sent', () => {
  it.each([
    ['anthropic', 'stub-slow', 504, ...ANTHROPIC],
    ['openai', 'stub-slow', 504, ...OPENAI],
    ['anthropic', 'stub-reset', 502, ...ANTHROPIC],
    ['openai', 'stub-reset', 502, ...OPENAI],
  ])(
    '%s, %s: the agent gets %i and the call is charged its reservation',
    async (_v, model, status, path, limit) => {
      const { gw } = ctx;
      const before = gw.gateway.spend().budgets[0]?.spent_tokens ?? 0;
      const sentBefore = received;
      const res = await fetch(`${gw.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model, ...limit, messages: [{ role: 'user', content: 'write a novel' }] }),
      });
      expect(res.status).toBe(status);
      await res.arrayBuffer();
      // The vendor got the whole request.
      expect(received).toBe(sentBefore + 1);
      const budget = gw.gateway.spend().budgets[0];
      expect(budget?.reserved_tokens).toBe(0);
      // At least the output limit: the vendor may bill up to 64,000 output tokens for it.
      expect((budget?.spent_tokens ?? 0) - before).toBeGreaterThanOrEqual(64_000);
      const line = gw.logs.findLast((l) => l['msg'] === 'decision' && l['kind'] === 'model');
      expect(line).toMatchObject({ settlement: 'charge_reserved' });
    },
  );
});
