// The domain types every enforcement point shares: what an agent asks to do, and what the policy answers.

export const EFFECTS = ['ALLOW', 'DENY', 'REQUIRE_APPROVAL'] as const;
export type Effect = (typeof EFFECTS)[number];

export const ACTION_TYPES = [
  'file_read',
  'file_write',
  'shell_exec',
  'network',
  'tool_call',
  'model',
] as const;
export type ActionType = (typeof ACTION_TYPES)[number];

/** An action as the evaluator sees it after parsing: every field optional, types checked. */
export interface Action {
  readonly type: ActionType;
  /** Requesting agent; absent means the agent this policy is bound to. */
  readonly agent?: string;
  readonly path?: string;
  readonly command?: string;
  readonly argv?: readonly string[];
  readonly url?: string;
  readonly method?: string;
  readonly host?: string;
  /** Resolved addresses of the network target, filled in by the proxy after DNS. */
  readonly addresses?: readonly string[];
  readonly tool?: string;
  readonly args?: Readonly<Record<string, unknown>>;
  readonly model?: string;
  /** Verified end-user claims (from a token the sidecar checked), never from the agent's own JSON. */
  readonly claims?: Readonly<Record<string, unknown>>;
}

/** Stable reason codes. A decision always carries one; the audit log records it, agents never see it. */
export const REASONS = {
  matched: 'matched',
  defaultDeny: 'no_rule_matched',
  identityMismatch: 'identity_mismatch',
  /** A DENY or REQUIRE_APPROVAL rule matched because one of its conditions could not be evaluated. */
  unevaluable: 'unevaluable_condition',
  malformedAction: 'malformed_action',
  unknownAction: 'unknown_action_type',
  misrouted: 'misrouted',
  rateLimited: 'rate_limited',
  addressBlocked: 'address_blocked',
  approvalDenied: 'approval_denied',
  approvalTimeout: 'approval_timeout',
  /** The approvals queue already holds its maximum: nothing more is parked for a human. */
  approvalQueueFull: 'approval_queue_full',
  /** Approved, but a reload while it was held brought a policy that denies it. */
  policyChanged: 'policy_changed',
  auditUnavailable: 'audit_unavailable',
  unauthenticated: 'unauthenticated',
  internalError: 'internal_error',
} as const;
export type Reason = (typeof REASONS)[keyof typeof REASONS] | (string & {});

export interface Decision {
  readonly effect: Effect;
  /** Name of the rule that decided, or null for a default or structural decision. */
  readonly rule: string | null;
  readonly reason: Reason;
}
