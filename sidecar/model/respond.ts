// The one place the model gateway turns a sidecar error code into a response in the vendor's own error format.
import type { ServerResponse } from 'node:http';
import { ERRORS, type ErrorCode } from '../errors.ts';
import { DECISION_HEADER } from '../server/http-errors.ts';
import type { VendorAdapter, VendorError } from './vendor.ts';

export const ERROR_CODE_HEADER = 'x-sidecar-error-code';

// Both official SDKs retry 408/409/429/5xx unless the response says `x-should-retry: false`. Only a failure that
// can clear by itself is worth a retry; a denial or an exhausted budget is not.
const RETRYABLE = new Set<ErrorCode>([
  'SIDECAR_ERR_RATE_LIMITED',
  'SIDECAR_ERR_UPSTREAM_UNREACHABLE',
  'SIDECAR_ERR_UPSTREAM_TIMEOUT',
  'SIDECAR_ERR_AUDIT_WRITE_FAILED',
  'SIDECAR_ERR_SHUTTING_DOWN',
  'SIDECAR_ERR_INTERNAL',
]);

/** The registry's generic text with the code and decision id appended: never a rule, tool or model name. */
export function vendorError(code: ErrorCode, decisionId?: string): VendorError {
  const spec = ERRORS[code];
  const suffix = decisionId ? `${code}; decision ${decisionId}` : code;
  return { status: spec.status, code, message: `${spec.message} (${suffix})` };
}

export function sendVendorError(
  res: ServerResponse,
  vendor: VendorAdapter,
  code: ErrorCode,
  decisionId?: string,
  opts: { readonly retry?: boolean } = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const e = vendorError(code, decisionId);
  const body = vendor.errorBody(e);
  const retry = opts.retry ?? RETRYABLE.has(code);
  res.writeHead(e.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    [ERROR_CODE_HEADER]: code,
    ...(decisionId ? { [DECISION_HEADER]: decisionId } : {}),
    ...(retry ? {} : { 'x-should-retry': 'false' }),
  });
  res.end(body);
}
