// Field names of the operational log, as constants, so the canonical decision line never drifts.

export const F = {
  component: 'component',
  decisionId: 'decision_id',
  agent: 'agent',
  kind: 'kind',
  actionType: 'action_type',
  effect: 'effect',
  rule: 'rule',
  reason: 'reason',
  policyDigest: 'policy_digest',
  durationMs: 'duration_ms',
  method: 'method',
  host: 'host',
  port: 'port',
  status: 'status',
  bytesIn: 'bytes_in',
  bytesOut: 'bytes_out',
  upstreamError: 'upstream_error',
  errorCode: 'error_code',
} as const;

/** The message of the one canonical line each request produces. */
export const DECISION_MSG = 'decision';
