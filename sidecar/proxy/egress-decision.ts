// The proxy's two-phase egress decision (policy before DNS, then policy with the resolved addresses), and the one
// canonical log line each proxied request or tunnel ends with.
import type { Logger } from 'pino';
import type { ErrorCode } from '../errors.ts';
import type { Policy } from '../policy/policy.ts';
import { REASONS } from '../policy/types.ts';
import type { Enforcer, Verdict } from '../server/enforcer-types.ts';
import { DECISION_MSG, F } from '../server/log-fields.ts';
import type { AddressGuard, GuardFailure, GuardResolution } from './address-guard.ts';

export interface NetworkAction {
  readonly type: 'network';
  readonly url: string;
  readonly method: string;
}

export interface EgressDeps {
  readonly enforcer: Enforcer;
  readonly currentPolicy: () => Policy;
  readonly guard: AddressGuard;
}

export type Resolved = Extract<GuardResolution, { ok: true }>;

export type EgressOutcome =
  | { readonly ok: true; readonly verdict: Verdict; readonly resolution: Resolved }
  | {
      readonly ok: false;
      readonly verdict: Verdict;
      readonly errorCode: ErrorCode;
      /** Set when the refusal is the upstream's fault (its name did not resolve), for the error metric. */
      readonly upstreamError?: 'dns';
    };

const GUARD_REFUSALS: Readonly<Record<GuardFailure, { reason: string; code: ErrorCode }>> = {
  // The agent sees a plain denial: which sockets are the sidecar's own is none of its business.
  own_listener: { reason: 'address_blocked', code: 'SIDECAR_ERR_POLICY_DENIED' },
  dns_failed: { reason: 'dns_failed', code: 'SIDECAR_ERR_UPSTREAM_UNREACHABLE' },
  invalid_host: { reason: 'invalid_host', code: 'SIDECAR_ERR_REQUEST_MALFORMED' },
};

const DENIED: ErrorCode = 'SIDECAR_ERR_POLICY_DENIED';

/**
 * Decides whether `action` may leave, resolving `host` only when the policy could allow it, so a denied name is
 * never looked up (no DNS exfiltration through the sidecar). Only an ALLOW verdict with the resolved addresses
 * lets the caller connect, and then only to `resolution.pinned`. Never throws.
 */
export async function decideEgress(
  deps: EgressDeps,
  action: NetworkAction,
  host: string,
  port: number,
  signal?: AbortSignal,
): Promise<EgressOutcome> {
  const pre = deps.currentPolicy().evaluate(action, {}, { addressesPending: true });
  // An approval rule that matched only because something about the request could not be evaluated (an encoded
  // slash in the path, a tunnel's hidden path or method) says nothing about the host: looking the name up for it
  // would let an agent make the sidecar resolve any name. Refused before DNS, never sent to an approver.
  if (pre.effect === 'DENY' || pre.reason === REASONS.unevaluable) {
    // Audited as the pre-DNS pass decided it (the rule that refused the name, or none), never as an unevaluable
    // address range it did not need.
    const verdict = await deps.enforcer.decide({ kind: 'proxy', action, addressesPending: true });
    return { ok: false, verdict, errorCode: verdict.errorCode ?? DENIED };
  }

  const resolution = await deps.guard.resolve(host, port);
  if (!resolution.ok) {
    const refusal = GUARD_REFUSALS[resolution.reason];
    const verdict = await deps.enforcer.refuse({ kind: 'proxy', action }, refusal.reason, refusal.code);
    return {
      ok: false,
      verdict,
      errorCode: verdict.errorCode ?? refusal.code,
      ...(resolution.reason === 'dns_failed' ? { upstreamError: 'dns' as const } : {}),
    };
  }

  const verdict = await deps.enforcer.decide({
    kind: 'proxy',
    action,
    trusted: { addresses: resolution.addresses.map((a) => a.address) },
    nonPublicAddress: !resolution.allPublic,
    ...(signal ? { signal } : {}),
  });
  if (verdict.effect !== 'ALLOW') return { ok: false, verdict, errorCode: verdict.errorCode ?? DENIED };
  return { ok: true, verdict, resolution };
}

/** What the canonical line of one proxied request or tunnel reports. */
export interface ProxyLogRecord {
  readonly method: string;
  /** The target's host; null when the request-target did not parse (the raw target may carry credentials). */
  readonly host: string | null;
  readonly port: number;
  readonly status: number;
  /** Bytes received from the agent (request body, or tunnel bytes agent to upstream). */
  readonly bytesIn: number;
  /** Bytes sent to the agent (response body, or tunnel bytes upstream to agent). */
  readonly bytesOut: number;
  readonly durationMs: number;
  readonly verdict?: Verdict;
  /** Why the proxy itself ended the exchange, when it was not the policy (limits, upstream failures). */
  readonly reason?: string;
  readonly errorCode?: ErrorCode;
  readonly upstreamError?: string;
}

export function logProxyLine(logger: Logger, agent: string, rec: ProxyLogRecord): void {
  logger.info(
    {
      [F.decisionId]: rec.verdict?.decisionId ?? null,
      [F.agent]: agent,
      [F.kind]: 'proxy',
      [F.method]: rec.method,
      [F.host]: rec.host,
      [F.port]: rec.port,
      [F.status]: rec.status,
      [F.bytesIn]: rec.bytesIn,
      [F.bytesOut]: rec.bytesOut,
      [F.durationMs]: Math.round(rec.durationMs * 1000) / 1000,
      [F.effect]: rec.verdict?.effect ?? 'DENY',
      [F.rule]: rec.verdict?.decision.rule ?? null,
      [F.reason]: rec.reason ?? rec.verdict?.decision.reason ?? null,
      ...(rec.errorCode ? { [F.errorCode]: rec.errorCode } : {}),
      ...(rec.upstreamError ? { [F.upstreamError]: rec.upstreamError } : {}),
    },
    DECISION_MSG,
  );
}
