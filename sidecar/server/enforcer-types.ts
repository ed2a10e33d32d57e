// The contract every enforcement point (evaluate API, proxy, tools, model) uses to turn an action into a verdict.
import type { ErrorCode } from '../errors.ts';
import type { TrustedContext } from '../policy/policy.ts';
import type { Decision } from '../policy/types.ts';

/** Where the decision was asked for: recorded as the audit entry's `kind`. */
export type DecisionKind = 'evaluate' | 'proxy' | 'tool' | 'model';

export interface DecisionRequest {
  readonly kind: DecisionKind;
  /** Untrusted action JSON as the agent sent it (or as the sidecar built it from a request). */
  readonly action: unknown;
  /** Facts the sidecar established itself: resolved addresses, verified end-user claims. */
  readonly trusted?: TrustedContext;
  /**
   * The proxy's pre-DNS denial: evaluated as the pass before DNS was (EvalOptions.addressesPending), so the audit
   * names the rule that refused the name unresolved. Such a request can only be denied.
   */
  readonly addressesPending?: boolean;
  /** Set when some resolved address is not public: then only a rule with an `address` condition may allow. */
  readonly nonPublicAddress?: boolean;
  /** Extra audit fields (e.g. model, tools before/after filtering, end-user identities). Redacted before writing. */
  readonly extra?: Readonly<Record<string, unknown>>;
  /** Aborts a wait for approval (client went away): the verdict becomes DENY. */
  readonly signal?: AbortSignal;
}

export interface Verdict {
  readonly decisionId: string;
  /** Final effect after rate limits and approvals: never REQUIRE_APPROVAL. */
  readonly effect: 'ALLOW' | 'DENY';
  /** The decision as audited (rule, reason); for approvals the reason says who decided. */
  readonly decision: Decision;
  readonly policyDigest: string;
  /** For DENY: the registry code the agent sees. */
  readonly errorCode?: ErrorCode;
  /** For approved actions: the approver's identity. */
  readonly approver?: string;
}

export interface Enforcer {
  /** Evaluate, rate-limit, hold for approval, audit (fail closed), count. Never throws. */
  decide(req: DecisionRequest): Promise<Verdict>;
  /** Audit and return a DENY the caller established itself (bad address, DNS failure, misrouted token). */
  refuse(req: DecisionRequest, reason: string, errorCode?: ErrorCode): Promise<Verdict>;
  /**
   * Audit a fact that is not a decision (a model call's usage and cost): an entry with `effect: null`.
   * Resolves false when it could not be written; the action it belongs to was already decided and audited.
   */
  record(req: DecisionRequest, reason: string): Promise<boolean>;
  /** The policy currently in force (swapped atomically on reload). */
  readonly agent: string;
}
