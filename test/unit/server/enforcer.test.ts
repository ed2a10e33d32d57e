// The decision pipeline: explicit address rules, rate limits, approvals and fail-closed auditing.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { AuditRecord } from '../../../sidecar/audit/entry.ts';
import {
  type ApprovalGate,
  type ApprovalOutcome,
  SidecarEnforcer,
} from '../../../sidecar/server/enforcer.ts';
import type { DecisionRequest } from '../../../sidecar/server/enforcer-types.ts';
import { createMetrics } from '../../../sidecar/server/metrics.ts';
import { PolicyHolder } from '../../../sidecar/server/policy-holder.ts';
import { RateLimiter } from '../../../sidecar/server/rate-limiter.ts';

const POLICY = `
agent: tester
rules:
  - name: approve-deploy
    action: shell_exec
    conditions: { command: { starts_with: "npm run deploy" } }
    effect: REQUIRE_APPROVAL
  - name: limited-tool
    action: tool_call
    conditions: { tool: { equals: ping } }
    effect: ALLOW
    rate_limit: { max: 2, per: minute }
  - name: public-api
    action: network
    conditions: { url: { starts_with: "https://api.example.com" } }
    effect: ALLOW
  - name: internal-api
    action: network
    conditions:
      url: { starts_with: "http://internal.example" }
      address: { in_cidr: ["10.0.0.0/8"] }
    effect: ALLOW
  - name: approve-refund
    action: tool_call
    conditions: { tool: { equals: refund } }
    effect: REQUIRE_APPROVAL
    rate_limit: { max: 1, per: minute }
`;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'enforcer-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function setup(
  opts: {
    outcome?: ApprovalOutcome;
    failAudit?: boolean;
    now?: () => number;
    /** Runs while the approver "decides" (after the held entry is written, before the outcome). */
    whileHeld?: () => void;
  } = {},
) {
  const file = join(dir, 'policy.yaml');
  await writeFile(file, POLICY);
  const metrics = createMetrics();
  const logger = pino({ level: 'silent' });
  const policies = await PolicyHolder.load(file, logger, metrics);
  const records: AuditRecord[] = [];
  const approvalsAsked: unknown[] = [];
  const approvals: ApprovalGate = {
    request: async (p) => {
      approvalsAsked.push(p);
      opts.whileHeld?.();
      return opts.outcome ?? { outcome: 'timeout' };
    },
  };
  const enforcer = new SidecarEnforcer({
    policies,
    audit: {
      append: async (r: AuditRecord) => {
        if (opts.failAudit) throw new Error('ENOSPC');
        records.push(r);
        return r as never;
      },
    },
    approvals,
    limiter: new RateLimiter(opts.now),
    metrics,
    logger,
  });
  return { enforcer, records, approvalsAsked, metrics };
}

const net = (url: string): DecisionRequest => ({
  kind: 'proxy',
  action: { type: 'network', url, method: 'GET' },
});

describe('enforcer', () => {
  it.each([
    {
      note: 'public address, url rule',
      req: { ...net('https://api.example.com/v1'), trusted: { addresses: ['93.184.216.34'] } },
      want: 'ALLOW',
      reason: 'matched',
    },
    {
      note: 'private address, url-only rule',
      req: {
        ...net('https://api.example.com/v1'),
        trusted: { addresses: ['10.1.2.3'] },
        nonPublicAddress: true,
      },
      want: 'DENY',
      reason: 'address_blocked',
    },
    {
      note: 'private address inside the rule range',
      req: {
        ...net('http://internal.example/x'),
        trusted: { addresses: ['10.1.2.3'] },
        nonPublicAddress: true,
      },
      want: 'ALLOW',
      reason: 'matched',
    },
    {
      note: 'private address outside the rule range',
      req: {
        ...net('http://internal.example/x'),
        trusted: { addresses: ['192.168.1.1'] },
        nonPublicAddress: true,
      },
      want: 'DENY',
      reason: 'no_rule_matched',
    },
    {
      note: 'before DNS, a name no rule allows',
      req: { ...net('https://elsewhere.example/'), addressesPending: true },
      want: 'DENY',
      reason: 'no_rule_matched',
    },
    {
      // The proxy only asks this after its own pre-DNS pass said DENY; should a reload slip in between, a name
      // still never leaves unresolved.
      note: 'before DNS, a name an address rule would allow',
      req: { ...net('http://internal.example/x'), addressesPending: true },
      want: 'DENY',
      reason: 'unevaluable_condition',
    },
    {
      note: 'malformed action',
      req: { kind: 'evaluate', action: { type: 'network', url: 5 } } as DecisionRequest,
      want: 'DENY',
      reason: 'malformed_action',
    },
    {
      note: 'not an object',
      req: { kind: 'evaluate', action: 'rm -rf /' } as DecisionRequest,
      want: 'DENY',
      reason: 'malformed_action',
    },
  ])('$note → $want ($reason)', async ({ req, want, reason }) => {
    const { enforcer, records } = await setup();
    const v = await enforcer.decide(req as DecisionRequest);
    expect(v.effect).toBe(want);
    expect(v.decision.reason).toBe(reason);
    expect(records).toHaveLength(1);
    expect(records[0]?.decision_id).toBe(v.decisionId);
    expect(records[0]?.reason).toBe(reason);
  });

  it('rate-limits a rule per window and frees the window as time passes', async () => {
    let now = 1_000_000;
    const { enforcer } = await setup({ now: () => now });
    const call = () =>
      enforcer.decide({ kind: 'tool', action: { type: 'tool_call', tool: 'ping', args: {} } });
    expect((await call()).effect).toBe('ALLOW');
    expect((await call()).effect).toBe('ALLOW');
    const third = await call();
    expect(third.effect).toBe('DENY');
    expect(third.decision.reason).toBe('rate_limited');
    expect(third.errorCode).toBe('SIDECAR_ERR_RATE_LIMITED');
    now += 61_000;
    expect((await call()).effect).toBe('ALLOW');
  });

  it.each([
    { outcome: { outcome: 'approved', approver: 'alice@ops' } as const, effect: 'ALLOW', reason: 'approved' },
    {
      outcome: { outcome: 'denied', approver: 'bob@ops' } as const,
      effect: 'DENY',
      reason: 'approval_denied',
    },
    { outcome: { outcome: 'timeout' } as const, effect: 'DENY', reason: 'approval_timeout' },
    { outcome: { outcome: 'cancelled' } as const, effect: 'DENY', reason: 'approval_cancelled' },
  ])(
    'approval $outcome.outcome → $effect, audited twice with the approver',
    async ({ outcome, effect, reason }) => {
      const { enforcer, records, approvalsAsked } = await setup({ outcome });
      const v = await enforcer.decide({
        kind: 'evaluate',
        action: { type: 'shell_exec', command: 'npm run deploy -- --prod' },
      });
      expect(v.effect).toBe(effect);
      expect(v.decision.reason).toBe(reason);
      expect(approvalsAsked).toHaveLength(1);
      expect(records.map((r) => [r.kind, r.effect, r.reason])).toEqual([
        ['evaluate', 'REQUIRE_APPROVAL', 'matched'],
        ['approval', effect, reason],
      ]);
      expect(records[1]?.decision_id).toBe(records[0]?.decision_id);
      if ('approver' in outcome) expect(records[1]?.extra?.['approver']).toBe(outcome.approver);
      expect(records[0]?.extra?.['action_hash']).toMatch(/^[0-9a-f]{64}$/);
    },
  );

  it('refuses, audited, an approval for an action that cannot be hashed, and spends no rate-limit slot on it', async () => {
    const { enforcer, records, approvalsAsked } = await setup();
    const refund = (amount: number): DecisionRequest => ({
      kind: 'tool',
      action: { type: 'tool_call', tool: 'refund', args: { amount } },
    });
    const v = await enforcer.decide(refund(Number.POSITIVE_INFINITY));
    expect(v).toMatchObject({
      effect: 'DENY',
      decision: { rule: 'approve-refund', reason: 'malformed_action' },
    });
    expect(records.map((r) => r.reason)).toEqual(['malformed_action']);
    expect(approvalsAsked).toHaveLength(0);
    // The one slot per minute is still there: the next, hashable call goes to the approver.
    const next = await enforcer.decide(refund(10));
    expect(next.decision.reason).toBe('approval_timeout');
    expect(approvalsAsked).toHaveLength(1);
  });

  // The metric's help text: the time to reach a verdict, excluding approval waits. The clock is faked, so the only
  // time that passes is the five minutes the approver takes, and none of it may reach the histogram.
  it("leaves the approver's wait out of sidecar_decision_duration_seconds", async () => {
    vi.useFakeTimers({ toFake: ['performance'] });
    try {
      const { enforcer, metrics } = await setup({
        outcome: { outcome: 'approved', approver: 'alice@ops' },
        whileHeld: () => vi.advanceTimersByTime(300_000),
      });
      const v = await enforcer.decide({
        kind: 'evaluate',
        action: { type: 'shell_exec', command: 'npm run deploy' },
      });
      expect(v.effect).toBe('ALLOW');
      const { values } = await metrics.decisionSeconds.get();
      const sum = values.find((x) => x.metricName === 'sidecar_decision_duration_seconds_sum')?.value;
      expect(sum).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });

  it('denies when the audit entry cannot be written (fail closed)', async () => {
    const { enforcer, metrics } = await setup({ failAudit: true });
    const v = await enforcer.decide(net('https://api.example.com/v1'));
    expect(v.effect).toBe('DENY');
    expect(v.errorCode).toBe('SIDECAR_ERR_AUDIT_WRITE_FAILED');
    expect(v.decision.reason).toBe('audit_unavailable');
    expect((await metrics.auditFailures.get()).values[0]?.value).toBe(1);
  });

  it('never throws, whatever the input', async () => {
    const { enforcer } = await setup();
    for (const action of [
      null,
      undefined,
      42,
      [],
      { type: 'network', url: {} },
      Object.create(null),
      { __proto__: { type: 'x' } },
    ]) {
      const v = await enforcer.decide({ kind: 'evaluate', action });
      expect(v.effect).toBe('DENY');
    }
  });
});
