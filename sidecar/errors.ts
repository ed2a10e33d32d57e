// The one registry of error codes: every refusal the sidecar produces names one of these.
// Codes are stable API (callers match on them); docs/errors.md documents each, and a test keeps them in sync.

export interface ErrorSpec {
  /** HTTP status used when the error reaches an agent over HTTP. */
  readonly status: number;
  /** The only text an agent ever sees: generic, never names a rule, tool, path or host. */
  readonly message: string;
}

export const ERRORS = {
  // Decisions
  SIDECAR_ERR_POLICY_DENIED: { status: 403, message: 'The action was denied by policy.' },
  SIDECAR_ERR_RATE_LIMITED: { status: 429, message: 'The action was denied by policy.' },
  SIDECAR_ERR_BUDGET_EXCEEDED: { status: 429, message: 'The budget for this agent is exhausted.' },
  // Policy files and configuration (operator-facing, never sent to an agent)
  SIDECAR_ERR_POLICY_INVALID: { status: 500, message: 'The policy is invalid.' },
  SIDECAR_ERR_CONFIG_INVALID: { status: 500, message: 'The configuration is invalid.' },
  SIDECAR_ERR_LISTEN_FAILED: { status: 500, message: 'A listener could not be opened.' },
  SIDECAR_ERR_AUDIT_DIR_UNWRITABLE: { status: 500, message: 'The audit directory is not writable.' },
  // Requests from an agent
  SIDECAR_ERR_REQUEST_MALFORMED: { status: 400, message: 'The request is malformed.' },
  SIDECAR_ERR_REQUEST_TOO_LARGE: { status: 413, message: 'The request body is too large.' },
  SIDECAR_ERR_HEADERS_TOO_LARGE: { status: 431, message: 'The request headers are too large.' },
  SIDECAR_ERR_REQUEST_TIMEOUT: { status: 408, message: 'The request timed out.' },
  SIDECAR_ERR_NOT_FOUND: { status: 404, message: 'Not found.' },
  SIDECAR_ERR_METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed.' },
  SIDECAR_ERR_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Unsupported content type.' },
  SIDECAR_ERR_TUNNEL_LIMIT: { status: 503, message: 'Too many concurrent tunnels.' },
  SIDECAR_ERR_UNAUTHENTICATED: { status: 401, message: 'Authentication is required.' },
  SIDECAR_ERR_SHUTTING_DOWN: { status: 503, message: 'The sidecar is shutting down.' },
  // Upstreams
  SIDECAR_ERR_UPSTREAM_UNREACHABLE: { status: 502, message: 'The upstream could not be reached.' },
  SIDECAR_ERR_UPSTREAM_TIMEOUT: { status: 504, message: 'The upstream timed out.' },
  SIDECAR_ERR_UPSTREAM_INVALID: { status: 502, message: 'The upstream sent an invalid response.' },
  // Audit
  SIDECAR_ERR_AUDIT_WRITE_FAILED: {
    status: 503,
    message: 'The action could not be audited, so it was denied.',
  },
  SIDECAR_ERR_AUDIT_CHAIN_BROKEN: { status: 500, message: 'The audit chain does not verify.' },
  // Admin API and approvals
  SIDECAR_ERR_ADMIN_UNAUTHORIZED: { status: 401, message: 'A valid admin token is required.' },
  SIDECAR_ERR_APPROVAL_NOT_FOUND: { status: 404, message: 'No pending approval with that id.' },
  // Anything unforeseen: still a clean, generic refusal.
  SIDECAR_ERR_INTERNAL: { status: 500, message: 'Internal error.' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** An error that carries a registry code. `detail` is for operators (logs), never for agents. */
export class SidecarError extends Error {
  readonly code: ErrorCode;
  readonly detail: string | undefined;

  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown }) {
    super(detail ?? ERRORS[code].message, options);
    this.name = 'SidecarError';
    this.code = code;
    this.detail = detail;
  }
}

export function isSidecarError(err: unknown): err is SidecarError {
  const code = err instanceof Error ? (err as unknown as { code?: unknown }).code : undefined;
  return typeof code === 'string' && Object.hasOwn(ERRORS, code);
}
