// Actions held for a human decision: each is bound to one exact action hash, resolves once, and times out to DENY.
import { randomUUID } from 'node:crypto';

export const DEFAULT_APPROVAL_TIMEOUT_MS = 300_000;
/** No human works through more held actions of one agent than this; past it the queue is a flood, not work. */
export const DEFAULT_MAX_PENDING = 100;
export const MAX_APPROVER_LENGTH = 128;

export type ApprovalOutcome =
  | { readonly outcome: 'approved'; readonly approver: string }
  | { readonly outcome: 'denied'; readonly approver: string }
  | { readonly outcome: 'timeout' }
  /** `reason` is `aborted` when the request's signal fired, otherwise what `cancelAll` was given. */
  | { readonly outcome: 'cancelled'; readonly reason: string };

export interface ApprovalRequest {
  readonly decisionId: string;
  readonly agent: string;
  readonly rule: string;
  /** The action as approvers see it: already redacted by the caller. */
  readonly action: unknown;
  /** actionDigest of the exact action that runs if approved (not of the redacted copy). */
  readonly actionHash: string;
  /** The agent went away: the request resolves `cancelled`. */
  readonly signal?: AbortSignal;
}

export interface PendingApproval {
  /** Unguessable, single use, distinct from the decision id the agent saw. */
  readonly id: string;
  readonly decisionId: string;
  readonly agent: string;
  readonly rule: string;
  readonly action: unknown;
  readonly actionHash: string;
  readonly createdAt: string;
  readonly expiresAt: string;
}

export type ResolveResult =
  | { readonly ok: true; readonly decisionId: string }
  | { readonly ok: false; readonly reason: 'not_found' | 'hash_mismatch' | 'invalid_approver' };

export type TimerHandle = unknown;

export interface ApprovalQueueOptions {
  readonly timeoutMs?: number;
  /** At most this many approvals pending at once; a request beyond it resolves `cancelled` (`queue_full`). */
  readonly maxPending?: number;
  readonly now?: () => number;
  readonly setTimer?: (fn: () => void, ms: number) => TimerHandle;
  readonly clearTimer?: (handle: TimerHandle) => void;
  /** Called with the number of pending approvals after every change (wire to the pending gauge). */
  readonly onChange?: (pendingCount: number) => void;
}

interface Entry {
  readonly view: PendingApproval;
  /** #now() at which the entry times out, whether or not its timer has fired yet. */
  readonly expires: number;
  readonly settle: (outcome: ApprovalOutcome) => void;
}

// Control, format (bidi overrides, zero-width), line and paragraph separators: an approver name ends up in
// logs, audit entries and terminals, so none of these may hide in it.
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}\p{Cn}]/u;

/** Non-empty, at most 128 characters, no control or invisible formatting characters, not only spaces. */
export function isValidApprover(approver: unknown): approver is string {
  if (typeof approver !== 'string' || approver.trim() === '') return false;
  if ([...approver].length > MAX_APPROVER_LENGTH) return false;
  return !UNPRINTABLE.test(approver);
}

function defaultSetTimer(fn: () => void, ms: number): TimerHandle {
  const t = setTimeout(fn, ms);
  // A held request must not keep a stopping process alive; shutdown resolves it through cancelAll.
  t.unref();
  return t;
}

function defaultClearTimer(handle: TimerHandle): void {
  clearTimeout(handle as ReturnType<typeof setTimeout>);
}

export class ApprovalQueue {
  readonly timeoutMs: number;
  readonly maxPending: number;
  readonly #now: () => number;
  readonly #setTimer: (fn: () => void, ms: number) => TimerHandle;
  readonly #clearTimer: (handle: TimerHandle) => void;
  readonly #onChange: ((pendingCount: number) => void) | undefined;
  readonly #pending = new Map<string, Entry>();
  #closedReason: string | undefined;

  constructor(opts: ApprovalQueueOptions = {}) {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_APPROVAL_TIMEOUT_MS;
    // A timer holds at most 2^31-1 ms; a longer timeout would fire at once and deny every approval unasked.
    if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0 || timeoutMs > 2_147_483_647) {
      throw new RangeError(
        `approval timeout must be a positive integer of milliseconds up to 2147483647, got ${timeoutMs}`,
      );
    }
    this.timeoutMs = timeoutMs;
    const maxPending = opts.maxPending ?? DEFAULT_MAX_PENDING;
    if (!Number.isSafeInteger(maxPending) || maxPending < 1) {
      throw new RangeError(`approval queue size must be a positive integer, got ${maxPending}`);
    }
    this.maxPending = maxPending;
    this.#now = opts.now ?? Date.now;
    this.#setTimer = opts.setTimer ?? defaultSetTimer;
    this.#clearTimer = opts.clearTimer ?? defaultClearTimer;
    this.#onChange = opts.onChange;
  }

  get size(): number {
    return this.#pending.size;
  }

  /** False when `maxPending` approvals are pending: a request now would be refused. */
  hasRoom(): boolean {
    return this.#pending.size < this.maxPending;
  }

  /** Holds the action until an approver decides, the timeout passes, the signal aborts or the queue closes. */
  request(p: ApprovalRequest): Promise<ApprovalOutcome> {
    if (this.#closedReason !== undefined) {
      return Promise.resolve({ outcome: 'cancelled', reason: this.#closedReason });
    }
    if (p.signal?.aborted) return Promise.resolve({ outcome: 'cancelled', reason: 'aborted' });
    if (!this.hasRoom()) return Promise.resolve({ outcome: 'cancelled', reason: 'queue_full' });

    let id = randomUUID();
    while (this.#pending.has(id)) id = randomUUID();
    const created = this.#now();
    const view: PendingApproval = Object.freeze({
      id,
      decisionId: p.decisionId,
      agent: p.agent,
      rule: p.rule,
      action: p.action,
      actionHash: p.actionHash,
      createdAt: new Date(created).toISOString(),
      expiresAt: new Date(created + this.timeoutMs).toISOString(),
    });

    return new Promise<ApprovalOutcome>((resolve) => {
      let timer: TimerHandle;
      // Whoever settles first removes the entry, so an id resolves exactly one request exactly once.
      const settle = (outcome: ApprovalOutcome): void => {
        if (this.#pending.get(id)?.settle !== settle) return;
        this.#pending.delete(id);
        this.#clearTimer(timer);
        p.signal?.removeEventListener('abort', onAbort);
        resolve(outcome);
        this.#changed();
      };
      const onAbort = (): void => settle({ outcome: 'cancelled', reason: 'aborted' });
      this.#pending.set(id, { view, expires: created + this.timeoutMs, settle });
      timer = this.#setTimer(() => settle({ outcome: 'timeout' }), this.timeoutMs);
      p.signal?.addEventListener('abort', onAbort, { once: true });
      this.#changed();
    });
  }

  /** Pending approvals, oldest first. */
  list(): PendingApproval[] {
    return [...this.#pending.keys()].flatMap((id) => this.#live(id)?.view ?? []);
  }

  /**
   * The pending entry for `id`, unless its time is up: then it is settled as `timeout` here, even if its timer has
   * not fired yet (an event loop running late), so nothing decides it after `expiresAt`.
   */
  #live(id: string): Entry | undefined {
    const entry = this.#pending.get(id);
    if (entry !== undefined && this.#now() >= entry.expires) {
      entry.settle({ outcome: 'timeout' });
      return undefined;
    }
    return entry;
  }

  /**
   * Approves pending `id`. With `expectedActionHash` (what the approver was shown) it must equal the pending
   * action's hash; on a mismatch nothing changes and the approval stays pending.
   */
  approve(id: string, approver: string, expectedActionHash?: string): ResolveResult {
    if (!isValidApprover(approver)) return { ok: false, reason: 'invalid_approver' };
    const entry = this.#live(id);
    if (entry === undefined) return { ok: false, reason: 'not_found' };
    if (expectedActionHash !== undefined && expectedActionHash !== entry.view.actionHash) {
      return { ok: false, reason: 'hash_mismatch' };
    }
    entry.settle({ outcome: 'approved', approver });
    return { ok: true, decisionId: entry.view.decisionId };
  }

  deny(id: string, approver: string): ResolveResult {
    if (!isValidApprover(approver)) return { ok: false, reason: 'invalid_approver' };
    const entry = this.#live(id);
    if (entry === undefined) return { ok: false, reason: 'not_found' };
    entry.settle({ outcome: 'denied', approver });
    return { ok: true, decisionId: entry.view.decisionId };
  }

  /** For shutdown: every pending request resolves `cancelled`, and so does every later one. */
  cancelAll(reason: string): void {
    this.#closedReason = reason;
    for (const entry of [...this.#pending.values()]) entry.settle({ outcome: 'cancelled', reason });
  }

  #changed(): void {
    this.#onChange?.(this.#pending.size);
  }
}
