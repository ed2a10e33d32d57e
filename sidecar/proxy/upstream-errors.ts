// Maps a failure while talking to an upstream (socket, undici, TLS) onto the registry code the agent sees.
import type { ErrorCode } from '../errors.ts';

export type UpstreamErrorKind = 'timeout' | 'unreachable' | 'invalid';

export interface UpstreamFailure {
  readonly kind: UpstreamErrorKind;
  readonly code: ErrorCode;
  /** The low-level code (ECONNREFUSED, UND_ERR_HEADERS_TIMEOUT, ...), for operators only. */
  readonly detail: string;
}

const TIMEOUTS = new Set([
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
  'SIDECAR_CONNECT_TIMEOUT',
]);

export function classifyUpstreamError(err: unknown): UpstreamFailure {
  const detail = errorCode(err);
  if (TIMEOUTS.has(detail)) return { kind: 'timeout', code: 'SIDECAR_ERR_UPSTREAM_TIMEOUT', detail };
  // llhttp parse errors and undici's response framing checks: the upstream answered, but not in HTTP.
  if (detail.startsWith('HPE_') || detail.startsWith('UND_ERR_RES_') || detail === 'UND_ERR_INFO') {
    return { kind: 'invalid', code: 'SIDECAR_ERR_UPSTREAM_INVALID', detail };
  }
  return { kind: 'unreachable', code: 'SIDECAR_ERR_UPSTREAM_UNREACHABLE', detail };
}

function errorCode(err: unknown): string {
  let found = err instanceof Error ? err.name : 'unknown';
  let cur: unknown = err;
  // undici wraps socket errors in `cause`: the innermost code says the most.
  for (let depth = 0; depth < 4 && cur instanceof Error; depth++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') found = code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return found;
}
