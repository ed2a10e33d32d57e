// The decision pipeline every enforcement point shares: evaluate, address rule, rate limit, approval, audit (fail closed).
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { AuditChain } from '../audit/chain.ts';
import type { AuditRecord } from '../audit/entry.ts';
import { redactForApprover } from '../audit/redact.ts';
import type { ErrorCode } from '../errors.ts';
import { isPlainObject } from '../policy/action.ts';
import type { Policy } from '../policy/policy.ts';
import { actionDigest } from '../policy/policy.ts';
import { ACTION_TYPES, type Action, type Decision, REASONS } from '../policy/types.ts';
import type { DecisionRequest, Enforcer, Verdict } from './enforcer-types.ts';
import type { Metrics } from './metrics.ts';
import type { PolicyHolder } from './policy-holder.ts';
import type { RateLimiter } from './rate-limiter.ts';

export type ApprovalOutcome =
  | { readonly outcome: 'approved'; readonly approver: string }
  | { readonly outcome: 'denied'; readonly approver: string }
  | { readonly outcome: 'timeout' }
  | { readonly outcome: 'cancelled' };

/** What the enforcer needs from the approvals queue. */
export interface ApprovalGate {
  request(p: {
    decisionId: string;
    agent: string;
    rule: string;
    action: unknown;
    actionHash: string;
    signal?: AbortSignal;
  }): Promise<ApprovalOutcome>;
  /** False when the queue holds its maximum; then nothing is parked (absent: always room). */
  hasRoom?(): boolean;
}

export interface EnforcerDeps {
  readonly policies: PolicyHolder;
  readonly audit: Pick<AuditChain, 'append'>;
  readonly approvals: ApprovalGate;
  readonly limiter: RateLimiter;
  readonly metrics: Metrics;
  readonly logger: Logger;
}

/** What an audit entry says happened: a decision, or (effect null) a recorded fact such as model usage. */
type AuditOutcome = Omit<Decision, 'effect'> & { readonly effect: Decision['effect'] | null };

/**
 * The chain stores actions as objects. Anything else an agent sent (`[1]`, `"x"`, `5`) is still a decision and
 * is recorded as what it was, truncated, so no input can produce an unaudited DENY.
 */
function auditableAction(action: unknown): Action {
  if (isPlainObject(action)) return action as unknown as Action;
  let shown: string;
  try {
    shown = JSON.stringify(action) ?? String(action);
  } catch {
    shown = Object.prototype.toString.call(action);
  }
  return { malformed: 'not_an_object', value: shown.slice(0, 256) } as unknown as Action;
}

/** The action's digest for approval binding, or null when it holds something canonical JSON cannot carry. */
function hashable(action: unknown): string | null {
  try {
    return actionDigest(action);
  } catch {
    return null;
  }
}

const KNOWN_TYPES: ReadonlySet<string> = new Set(ACTION_TYPES);

/**
 * The metric label for an action: its type, or `invalid`. policy.evaluate has already parsed the action and said
 * through its reason whether it was malformed, so this reads the one field instead of parsing it a second time.
 */
function actionLabel(action: unknown, reason: string): string {
  if (reason === REASONS.malformedAction || reason === REASONS.unknownAction) return 'invalid';
  const type = isPlainObject(action) ? action['type'] : undefined;
  return typeof type === 'string' && KNOWN_TYPES.has(type) ? type : 'invalid';
}

const PENDING = Object.freeze({ addressesPending: true });

const OUTCOME_REASON = {
  approved: 'approved',
  denied: REASONS.approvalDenied,
  timeout: REASONS.approvalTimeout,
  cancelled: 'approval_cancelled',
} as const;

export class SidecarEnforcer implements Enforcer {
  readonly #d: EnforcerDeps;

  constructor(deps: EnforcerDeps) {
    this.#d = deps;
  }

  get agent(): string {
    return this.#d.policies.current.agent;
  }

  /** What `policy` says of the request: evaluation, the pre-DNS pass and the non-public address rule. */
  #judge(policy: Policy, req: DecisionRequest): Decision {
    const decision = policy.evaluate(req.action, req.trusted ?? {}, req.addressesPending ? PENDING : {});
    // Nothing may go out on an unresolved name: a pre-DNS pass decides a DENY or nothing at all.
    if (req.addressesPending && decision.effect !== 'DENY') {
      return { effect: 'DENY', rule: decision.rule, reason: REASONS.unevaluable };
    }
    // Non-public destinations need a rule that names their range; a plain URL allow never reaches them.
    const rule = decision.rule === null ? undefined : policy.rule(decision.rule);
    if (decision.effect !== 'DENY' && req.nonPublicAddress && !rule?.fields.includes('address')) {
      return { effect: 'DENY', rule: decision.rule, reason: REASONS.addressBlocked };
    }
    return decision;
  }

  async decide(req: DecisionRequest): Promise<Verdict> {
    // Moved forward by the time a human took over an approval: the latency metric is the sidecar's own.
    let started = performance.now();
    const decisionId = randomUUID();
    // The policy that decides; after an approval, the one in force when the action is released.
    let policy = this.#d.policies.current;
    let decision = this.#judge(policy, req);
    let errorCode: ErrorCode = 'SIDECAR_ERR_POLICY_DENIED';
    const rule = decision.rule === null ? undefined : policy.rule(decision.rule);

    // An approval is bound to the action's hash: an action that cannot be hashed is refused, audited, before it
    // can spend a rate-limit slot or reach an approver.
    const actionHash = decision.effect === 'REQUIRE_APPROVAL' ? hashable(req.action) : undefined;
    if (actionHash === null)
      decision = { effect: 'DENY', rule: decision.rule, reason: REASONS.malformedAction };
    // A full queue parks nothing more: each held action is memory, a timer and a connection, and a flooded queue
    // is where a bad approval slips through.
    if (decision.effect === 'REQUIRE_APPROVAL' && this.#d.approvals.hasRoom?.() === false) {
      decision = { effect: 'DENY', rule: decision.rule, reason: REASONS.approvalQueueFull };
      errorCode = 'SIDECAR_ERR_RATE_LIMITED';
    }
    if (decision.effect !== 'DENY' && rule?.rateLimit && !this.#d.limiter.take(rule.name, rule.rateLimit)) {
      decision = { effect: 'DENY', rule: decision.rule, reason: REASONS.rateLimited };
      errorCode = 'SIDECAR_ERR_RATE_LIMITED';
    }

    let approver: string | undefined;
    if (decision.effect === 'REQUIRE_APPROVAL' && actionHash) {
      const held = await this.#write(req.kind, req, decisionId, decision, policy.digest, {
        approval: 'pending',
        action_hash: actionHash,
      });
      if (!held) return this.#auditFailed(req, decisionId, policy.digest, started);
      const waitStarted = performance.now();
      const outcome = await this.#d.approvals.request({
        decisionId,
        agent: policy.agent,
        rule: decision.rule as string,
        action: redactForApprover(req.action),
        actionHash,
        ...(req.signal ? { signal: req.signal } : {}),
      });
      started += performance.now() - waitStarted;
      if ('approver' in outcome) approver = outcome.approver;
      const heldUnder = policy;
      decision = {
        effect: outcome.outcome === 'approved' ? 'ALLOW' : 'DENY',
        rule: decision.rule,
        reason: OUTCOME_REASON[outcome.outcome],
      };
      // A reload while the action was held (a lockdown, say) has the last word: the approval releases the action
      // only if the policy now in force would still allow it or send it to approval.
      policy = this.#d.policies.current;
      if (decision.effect === 'ALLOW' && policy !== heldUnder && this.#judge(policy, req).effect === 'DENY') {
        decision = { effect: 'DENY', rule: decision.rule, reason: REASONS.policyChanged };
      }
      const extra = { approval: outcome.outcome, action_hash: actionHash, ...(approver ? { approver } : {}) };
      const ok = await this.#write('approval', req, decisionId, decision, policy.digest, extra);
      if (!ok) return this.#auditFailed(req, decisionId, policy.digest, started);
    } else if (!(await this.#write(req.kind, req, decisionId, decision, policy.digest))) {
      return this.#auditFailed(req, decisionId, policy.digest, started);
    }

    const effect = decision.effect === 'ALLOW' ? 'ALLOW' : 'DENY';
    this.#count(req, effect, decision.reason, started);
    return {
      decisionId,
      effect,
      decision,
      policyDigest: policy.digest,
      ...(effect === 'DENY' ? { errorCode } : {}),
      ...(approver ? { approver } : {}),
    };
  }

  async refuse(
    req: DecisionRequest,
    reason: string,
    errorCode: ErrorCode = 'SIDECAR_ERR_POLICY_DENIED',
  ): Promise<Verdict> {
    const started = performance.now();
    const decisionId = randomUUID();
    const digest = this.#d.policies.current.digest;
    const decision: Decision = { effect: 'DENY', rule: null, reason };
    if (!(await this.#write(req.kind, req, decisionId, decision, digest))) {
      return this.#auditFailed(req, decisionId, digest, started);
    }
    this.#count(req, 'DENY', reason, started);
    return { decisionId, effect: 'DENY', decision, policyDigest: digest, errorCode };
  }

  async record(req: DecisionRequest, reason: string): Promise<boolean> {
    const policy = this.#d.policies.current;
    return this.#write(req.kind, req, randomUUID(), { effect: null, rule: null, reason }, policy.digest);
  }

  async #write(
    kind: string,
    req: DecisionRequest,
    decisionId: string,
    decision: AuditOutcome,
    digest: string,
    more?: Record<string, unknown>,
  ): Promise<boolean> {
    // The chain takes a redacted copy of action and extra itself; redacting here too would only double the work.
    const extra = req.extra || more ? { ...req.extra, ...more } : undefined;
    const record: AuditRecord = {
      decision_id: decisionId,
      agent: this.#d.policies.current.agent,
      kind,
      action: auditableAction(req.action),
      effect: decision.effect,
      rule: decision.rule,
      reason: decision.reason,
      policy_digest: digest,
      ...(req.trusted?.addresses
        ? { extra: { ...extra, addresses: req.trusted.addresses } }
        : extra
          ? { extra }
          : {}),
    };
    try {
      await this.#d.audit.append(record);
      return true;
    } catch (err) {
      this.#d.metrics.auditFailures.inc();
      this.#d.logger.error(
        { decision_id: decisionId, err: (err as Error).message },
        'audit write failed; denying',
      );
      return false;
    }
  }

  #auditFailed(req: DecisionRequest, decisionId: string, digest: string, started: number): Verdict {
    this.#count(req, 'DENY', REASONS.auditUnavailable, started);
    return {
      decisionId,
      effect: 'DENY',
      decision: { effect: 'DENY', rule: null, reason: REASONS.auditUnavailable },
      policyDigest: digest,
      errorCode: 'SIDECAR_ERR_AUDIT_WRITE_FAILED',
    };
  }

  #count(req: DecisionRequest, effect: string, reason: string, started: number): void {
    const action = actionLabel(req.action, reason);
    this.#d.metrics.decisions.inc({ kind: req.kind, action, effect, reason });
    this.#d.metrics.decisionSeconds.observe((performance.now() - started) / 1000);
  }
}
