// docs/approvals.md: "An approval that arrives after the timeout gets 404: it is gone." That holds by the clock,
// not by the timer: an approve handled after `expires_at` but before a late timer callback (an event loop behind)
// times the action out instead of turning it into ALLOW.
import { describe, expect, it } from 'vitest';
import { ApprovalQueue } from '../../../sidecar/approvals/approval-queue.ts';

describe('approval after expires_at', () => {
  it('is refused even when the timeout timer has not run yet (event loop behind)', async () => {
    const queue = new ApprovalQueue({ timeoutMs: 50 });
    const outcome = queue.request({
      decisionId: 'd-1',
      agent: 'helpdesk',
      rule: 'refunds-need-approval',
      action: { type: 'tool_call', tool: 'refund' },
      actionHash: 'a'.repeat(64),
    });
    const pending = queue.list()[0]!;
    // The event loop is busy (GC pause, a burst of requests) past the deadline; the admin request handler then
    // runs before the timers phase does.
    const deadline = Date.parse(pending.expiresAt);
    while (Date.now() <= deadline + 20) {
      // busy
    }
    const result = queue.approve(pending.id, 'alice@ops', 'a'.repeat(64));
    expect(
      { result, expired_ms_ago: Date.now() - deadline > 0 },
      'approve answered after expires_at',
    ).toEqual({ result: { ok: false, reason: 'not_found' }, expired_ms_ago: true });
    expect(await outcome).toEqual({ outcome: 'timeout' });
  });
});
