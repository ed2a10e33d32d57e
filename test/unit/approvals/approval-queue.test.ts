// The approval queue on an injected clock: approve, deny, timeout, single use, hash binding, cancellation.
import { describe, expect, it } from 'vitest';
import type { ApprovalQueueOptions, ApprovalRequest } from '../../../sidecar/approvals/approval-queue.ts';
import {
  ApprovalQueue,
  DEFAULT_APPROVAL_TIMEOUT_MS,
  DEFAULT_MAX_PENDING,
  isValidApprover,
} from '../../../sidecar/approvals/approval-queue.ts';
import { actionDigest } from '../../../sidecar/policy/policy.ts';

/** A clock and timers that move only when the test says so. */
function fakeClock(start = Date.UTC(2026, 0, 1, 12, 0, 0)) {
  let now = start;
  let nextId = 1;
  const timers = new Map<number, { at: number; fn: () => void; ms: number }>();
  return {
    now: () => now,
    setTimer: (fn: () => void, ms: number) => {
      const id = nextId++;
      timers.set(id, { at: now + ms, fn, ms });
      return id;
    },
    clearTimer: (handle: unknown) => {
      timers.delete(handle as number);
    },
    advance(ms: number) {
      now += ms;
      for (const [id, t] of [...timers]) {
        if (t.at <= now) {
          timers.delete(id);
          t.fn();
        }
      }
    },
    get timers() {
      return [...timers.values()];
    },
  };
}

function setup(opts: Partial<ApprovalQueueOptions> = {}) {
  const clock = fakeClock();
  const changes: number[] = [];
  const queue = new ApprovalQueue({
    timeoutMs: 60_000,
    now: clock.now,
    setTimer: clock.setTimer,
    clearTimer: clock.clearTimer,
    onChange: (n) => changes.push(n),
    ...opts,
  });
  return { clock, changes, queue };
}

const ACTION = { type: 'tool_call', tool: 'refund', args: { order: 'A-17', amount: 40 } };
const HASH = actionDigest(ACTION);

function req(overrides: Partial<ApprovalRequest> = {}): ApprovalRequest {
  return {
    decisionId: 'dec-1',
    agent: 'helpdesk',
    rule: 'refunds-need-approval',
    action: ACTION,
    actionHash: HASH,
    ...overrides,
  };
}

/** Whether the promise has settled, without waiting for it. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  const marker = Symbol('pending');
  return (await Promise.race([p, Promise.resolve(marker)])) !== marker;
}

describe('ApprovalQueue', () => {
  it('lists a held action under a fresh id and resolves approved with the approver', async () => {
    const { queue, clock, changes } = setup();
    const outcome = queue.request(req());
    const [pending, ...rest] = queue.list();
    expect(rest).toEqual([]);
    expect(pending).toMatchObject({
      decisionId: 'dec-1',
      agent: 'helpdesk',
      rule: 'refunds-need-approval',
      action: ACTION,
      actionHash: HASH,
      createdAt: '2026-01-01T12:00:00.000Z',
      expiresAt: '2026-01-01T12:01:00.000Z',
    });
    expect(pending!.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(pending!.id).not.toBe('dec-1');

    expect(queue.approve(pending!.id, 'alice@ops', HASH)).toEqual({ ok: true, decisionId: 'dec-1' });
    await expect(outcome).resolves.toEqual({ outcome: 'approved', approver: 'alice@ops' });
    expect(queue.list()).toEqual([]);
    expect(queue.size).toBe(0);
    expect(clock.timers).toEqual([]);
    expect(changes).toEqual([1, 0]);
  });

  it('approves without an expected hash too (the API binds when the approver sends one)', async () => {
    const { queue } = setup();
    const outcome = queue.request(req());
    expect(queue.approve(queue.list()[0]!.id, 'alice')).toMatchObject({ ok: true });
    await expect(outcome).resolves.toEqual({ outcome: 'approved', approver: 'alice' });
  });

  it('resolves denied with the approver', async () => {
    const { queue, clock } = setup();
    const outcome = queue.request(req());
    expect(queue.deny(queue.list()[0]!.id, 'bob')).toEqual({ ok: true, decisionId: 'dec-1' });
    await expect(outcome).resolves.toEqual({ outcome: 'denied', approver: 'bob' });
    expect(clock.timers).toEqual([]);
  });

  it('times out after timeoutMs and forgets the id', async () => {
    const { queue, clock, changes } = setup();
    const outcome = queue.request(req());
    const { id } = queue.list()[0]!;
    clock.advance(59_999);
    expect(await settled(outcome)).toBe(false);
    clock.advance(1);
    await expect(outcome).resolves.toEqual({ outcome: 'timeout' });
    expect(queue.approve(id, 'alice', HASH)).toEqual({ ok: false, reason: 'not_found' });
    expect(changes).toEqual([1, 0]);
  });

  it('defaults to a five-minute timeout', () => {
    const clock = fakeClock();
    const queue = new ApprovalQueue({
      now: clock.now,
      setTimer: clock.setTimer,
      clearTimer: clock.clearTimer,
    });
    void queue.request(req());
    expect(DEFAULT_APPROVAL_TIMEOUT_MS).toBe(300_000);
    expect(clock.timers.map((t) => t.ms)).toEqual([300_000]);
    expect(queue.list()[0]!.expiresAt).toBe('2026-01-01T12:05:00.000Z');
    queue.cancelAll('test over');
  });

  // A hostile agent could otherwise park thousands of held actions (memory, timers, connections) and flood the
  // approvers' queue: past maxPending a request is refused at once, and room comes back as entries settle.
  it('holds at most maxPending requests; one more is cancelled as queue_full until one settles', async () => {
    const { queue } = setup({ maxPending: 2 });
    const held = [queue.request(req({ decisionId: 'a' })), queue.request(req({ decisionId: 'b' }))];
    expect(queue.hasRoom()).toBe(false);
    await expect(queue.request(req({ decisionId: 'c' }))).resolves.toEqual({
      outcome: 'cancelled',
      reason: 'queue_full',
    });
    expect(queue.list().map((p) => p.decisionId)).toEqual(['a', 'b']);
    queue.deny(queue.list()[0]!.id, 'alice');
    await held[0];
    expect(queue.hasRoom()).toBe(true);
    void queue.request(req({ decisionId: 'd' }));
    expect(queue.list().map((p) => p.decisionId)).toEqual(['b', 'd']);
    queue.cancelAll('test over');
  });

  it('defaults to at most 100 pending, and refuses a size that is not a positive integer', () => {
    expect(new ApprovalQueue().maxPending).toBe(DEFAULT_MAX_PENDING);
    expect(DEFAULT_MAX_PENDING).toBe(100);
    for (const maxPending of [0, -1, 1.5, Number.NaN])
      expect(() => new ApprovalQueue({ maxPending })).toThrow(RangeError);
  });

  it('refuses a timeout that is not a positive integer', () => {
    for (const timeoutMs of [0, -1, 1.5, Number.NaN])
      expect(() => new ApprovalQueue({ timeoutMs })).toThrow(RangeError);
  });

  it('is single use: a replayed approval is not_found and cannot resolve a later request', async () => {
    const { queue } = setup();
    const first = queue.request(req({ decisionId: 'dec-1' }));
    const firstId = queue.list()[0]!.id;
    expect(queue.approve(firstId, 'alice', HASH).ok).toBe(true);
    await expect(first).resolves.toMatchObject({ outcome: 'approved' });

    const second = queue.request(req({ decisionId: 'dec-2' }));
    const secondId = queue.list()[0]!.id;
    expect(secondId).not.toBe(firstId);
    expect(queue.approve(firstId, 'alice', HASH)).toEqual({ ok: false, reason: 'not_found' });
    expect(queue.deny(firstId, 'alice')).toEqual({ ok: false, reason: 'not_found' });
    expect(await settled(second)).toBe(false);
    expect(queue.deny(secondId, 'bob').ok).toBe(true);
    await expect(second).resolves.toEqual({ outcome: 'denied', approver: 'bob' });
  });

  it('is bound to the action: a different hash is hash_mismatch and the approval stays pending', async () => {
    const { queue } = setup();
    const outcome = queue.request(req());
    const { id } = queue.list()[0]!;
    const other = actionDigest({ ...ACTION, args: { order: 'A-17', amount: 4000 } });
    expect(queue.approve(id, 'alice', other)).toEqual({ ok: false, reason: 'hash_mismatch' });
    expect(await settled(outcome)).toBe(false);
    expect(queue.list().map((p) => p.id)).toEqual([id]);
    expect(queue.approve(id, 'alice', HASH).ok).toBe(true);
    await expect(outcome).resolves.toEqual({ outcome: 'approved', approver: 'alice' });
  });

  it('refuses an unusable approver name and keeps the approval pending', async () => {
    const { queue } = setup();
    const outcome = queue.request(req());
    const { id } = queue.list()[0]!;
    for (const bad of [
      '',
      '   ',
      'a'.repeat(129),
      'alice\nforged: line',
      'alice\u202Eevil',
      'zero\u200Bwidth',
    ]) {
      expect(queue.approve(id, bad, HASH)).toEqual({ ok: false, reason: 'invalid_approver' });
      expect(queue.deny(id, bad)).toEqual({ ok: false, reason: 'invalid_approver' });
    }
    expect(await settled(outcome)).toBe(false);
    expect(queue.approve(id, 'José Álvarez <jose@example.com>', HASH).ok).toBe(true);
  });

  it.each([
    { note: 'plain', approver: 'alice@host', valid: true },
    { note: 'non-ASCII letters', approver: 'Zoë Ström', valid: true },
    { note: '128 characters', approver: 'a'.repeat(128), valid: true },
    { note: '129 characters', approver: 'a'.repeat(129), valid: false },
    { note: 'empty', approver: '', valid: false },
    { note: 'tab', approver: 'a\tb', valid: false },
    { note: 'DEL', approver: 'a\u007Fb', valid: false },
    { note: 'C1 control', approver: 'a\u009Bb', valid: false },
    { note: 'not a string', approver: 42, valid: false },
  ])('isValidApprover: $note', ({ approver, valid }) => {
    expect(isValidApprover(approver)).toBe(valid);
  });

  it('resolves cancelled when the request signal aborts, and forgets the id', async () => {
    const { queue, clock } = setup();
    const ac = new AbortController();
    const outcome = queue.request(req({ signal: ac.signal }));
    const { id } = queue.list()[0]!;
    ac.abort();
    await expect(outcome).resolves.toEqual({ outcome: 'cancelled', reason: 'aborted' });
    expect(queue.approve(id, 'alice', HASH)).toEqual({ ok: false, reason: 'not_found' });
    expect(clock.timers).toEqual([]);
  });

  it('does not hold a request whose signal has already aborted', async () => {
    const { queue, changes } = setup();
    await expect(queue.request(req({ signal: AbortSignal.abort() }))).resolves.toEqual({
      outcome: 'cancelled',
      reason: 'aborted',
    });
    expect(queue.size).toBe(0);
    expect(changes).toEqual([]);
  });

  it('cancelAll resolves every pending request cancelled, and every later one at once', async () => {
    const { queue, clock, changes } = setup();
    const a = queue.request(req({ decisionId: 'dec-a' }));
    const b = queue.request(req({ decisionId: 'dec-b' }));
    expect(queue.size).toBe(2);
    queue.cancelAll('shutdown');
    await expect(a).resolves.toEqual({ outcome: 'cancelled', reason: 'shutdown' });
    await expect(b).resolves.toEqual({ outcome: 'cancelled', reason: 'shutdown' });
    expect(queue.size).toBe(0);
    expect(clock.timers).toEqual([]);
    expect(changes).toEqual([1, 2, 1, 0]);
    await expect(queue.request(req({ decisionId: 'dec-c' }))).resolves.toEqual({
      outcome: 'cancelled',
      reason: 'shutdown',
    });
    expect(queue.size).toBe(0);
  });

  it('a decision after the timeout fired changes nothing', async () => {
    const { queue, clock } = setup();
    const outcome = queue.request(req());
    const { id } = queue.list()[0]!;
    clock.advance(60_000);
    expect(queue.deny(id, 'bob')).toEqual({ ok: false, reason: 'not_found' });
    await expect(outcome).resolves.toEqual({ outcome: 'timeout' });
  });
});
