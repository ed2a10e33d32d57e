// docs/approvals.md: "An approval that arrives after the timeout gets 404: it is gone." That holds by the clock,
// not by the timer: an approve handled after `expires_at` but before a late timer callback (an event loop behind)
// times the action out instead of turning it into ALLOW.
import { describe, expect, it } from 'vitest';
import { ApprovalQueue } from '../../../sidecar/approvals/approval-queue.ts';

describe('approval after expires_at', () => {
  // A clock the test moves, and a timeout timer that never fires: the event loop is behind (a GC pause, a burst of
  // requests) and the admin request is handled before the timers phase.
  function lateQueue() {
    const clock = { now: 1_000_000 };
    const queue = new ApprovalQueue({
      timeoutMs: 50,
      now: () => clock.now,
      setTimer: () => undefined,
      clearTimer: () => {},
    });
    const outcome = queue.request({
      decisionId: 'd-1',
      agent: 'helpdesk',
      rule: 'refunds-need-approval',
      action: { type: 'tool_call', tool: 'refund' },
      actionHash: 'a'.repeat(64),
    });
    return { clock, queue, outcome, pending: queue.list()[0]! };
  }

  it.each([
    ['approve', (q: ApprovalQueue, id: string) => q.approve(id, 'alice@ops', 'a'.repeat(64))],
    ['deny', (q: ApprovalQueue, id: string) => q.deny(id, 'alice@ops')],
  ])(
    '%s is refused once expires_at has passed, even if the timeout timer has not run',
    async (_name, act) => {
      const { clock, queue, outcome, pending } = lateQueue();
      clock.now = Date.parse(pending.expiresAt);
      expect(act(queue, pending.id)).toEqual({ ok: false, reason: 'not_found' });
      expect(await outcome).toEqual({ outcome: 'timeout' });
      expect(queue.list()).toEqual([]);
    },
  );

  it('is still taken just before expires_at', async () => {
    const { clock, queue, outcome, pending } = lateQueue();
    clock.now = Date.parse(pending.expiresAt) - 1;
    expect(queue.approve(pending.id, 'alice@ops', 'a'.repeat(64))).toEqual({ ok: true, decisionId: 'd-1' });
    expect(await outcome).toEqual({ outcome: 'approved', approver: 'alice@ops' });
  });

  it('is no longer listed once expires_at has passed', async () => {
    const { clock, queue, outcome, pending } = lateQueue();
    clock.now = Date.parse(pending.expiresAt) + 5;
    expect(queue.list()).toEqual([]);
    expect(await outcome).toEqual({ outcome: 'timeout' });
  });
});

describe('approval timeout range', () => {
  it.each([0, -1, 1.5, 2_147_483_648, 30 * 24 * 3600 * 1000])('refuses %d ms', (timeoutMs) => {
    expect(() => new ApprovalQueue({ timeoutMs })).toThrow(RangeError);
  });

  it('takes the longest a timer can hold', () => {
    expect(new ApprovalQueue({ timeoutMs: 2_147_483_647 }).timeoutMs).toBe(2_147_483_647);
  });
});
