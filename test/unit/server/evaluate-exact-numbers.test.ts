// /v1/evaluate (and the MCP gateway) refuse a number that is not exactly the decimal its double shows. Found by
// review, round 7: the strict parser rounded 9007199254740993 to ...992 and decided on that, while the hook (a
// Python or Go framework) passes the exact number to the local tool: an ALLOW pinned to one account id admitted
// another, and a DENY on an amount missed a larger one.
import { describe, expect, it } from 'vitest';
import { AGENT, evaluate, useSidecarAndUpstream } from '../reliability/harness.ts';

const POLICY = `agent: ${AGENT}
rules:
  - name: big-transfers
    action: tool_call
    conditions:
      tool: { equals: transfer }
      args.amount: { gt: 9007199254740992 }
    effect: DENY
  - name: transfer-to-own-account
    action: tool_call
    conditions:
      tool: { equals: transfer }
      args.to: { equals: 9007199254740992 }
    effect: ALLOW
`;

describe('r7 evaluate: integers a double cannot hold', () => {
  const ctx = useSidecarAndUpstream({ policy: POLICY });

  it('does not ALLOW account 9007199254740993 under a rule pinned to account 9007199254740992', async () => {
    const r = await evaluate(
      ctx.s.url,
      '{"type":"tool_call","tool":"transfer","args":{"to":9007199254740993,"amount":5}}',
    );
    expect(r.body['effect']).toBe('DENY');
  });

  it('does not let amount 9007199254740993 past a DENY on amounts above 9007199254740992', async () => {
    const r = await evaluate(
      ctx.s.url,
      '{"type":"tool_call","tool":"transfer","args":{"to":9007199254740992,"amount":9007199254740993}}',
    );
    expect(r.body['effect']).toBe('DENY');
  });

  it('control: the pinned account itself is allowed', async () => {
    const r = await evaluate(
      ctx.s.url,
      '{"type":"tool_call","tool":"transfer","args":{"to":9007199254740992,"amount":5}}',
    );
    expect(r.body['effect']).toBe('ALLOW');
  });
});

describe('r7 evaluate: decimals a double cannot hold', () => {
  const ctx = useSidecarAndUpstream({
    policy: `agent: ${AGENT}
rules:
  - name: refunds-over-100
    action: tool_call
    conditions:
      tool: { equals: refund }
      args.amount: { gt: 100 }
    effect: DENY
  - name: refunds
    action: tool_call
    conditions: { tool: { equals: refund } }
    effect: ALLOW
`,
  });

  it('does not let 100.0000000000000001 (a Decimal to the tool) past a DENY on amounts above 100', async () => {
    const r = await evaluate(
      ctx.s.url,
      '{"type":"tool_call","tool":"refund","args":{"amount":100.0000000000000001}}',
    );
    expect(r.body['effect']).toBe('DENY');
  });
});
