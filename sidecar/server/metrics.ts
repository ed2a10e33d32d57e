// Prometheus metrics for one sidecar (prom-client, on a private registry served by the admin listener).
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export function createMetrics() {
  const registry = new Registry();
  const latencyBuckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 5];
  const m = {
    registry,
    decisions: new Counter({
      name: 'sidecar_decisions_total',
      help: 'Decisions by action type, final effect and reason',
      labelNames: ['kind', 'action', 'effect', 'reason'] as const,
      registers: [registry],
    }),
    decisionSeconds: new Histogram({
      name: 'sidecar_decision_duration_seconds',
      help: 'Time to reach a verdict, including audit write (excluding approval waits)',
      buckets: latencyBuckets,
      registers: [registry],
    }),
    proxySeconds: new Histogram({
      name: 'sidecar_proxy_duration_seconds',
      help: 'Proxied request duration until the response ended',
      labelNames: ['mode'] as const,
      buckets: latencyBuckets,
      registers: [registry],
    }),
    proxyBytes: new Counter({
      name: 'sidecar_proxy_bytes_total',
      help: 'Bytes proxied',
      labelNames: ['direction'] as const,
      registers: [registry],
    }),
    upstreamErrors: new Counter({
      name: 'sidecar_upstream_errors_total',
      help: 'Upstream failures by kind',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    tunnels: new Gauge({
      name: 'sidecar_tunnels_active',
      help: 'Open CONNECT tunnels',
      registers: [registry],
    }),
    reloads: new Counter({
      name: 'sidecar_policy_reloads_total',
      help: 'Policy reloads by result',
      labelNames: ['result'] as const,
      registers: [registry],
    }),
    auditFailures: new Counter({
      name: 'sidecar_audit_write_failures_total',
      help: 'Audit entries that could not be written (their actions were denied)',
      registers: [registry],
    }),
    approvalsPending: new Gauge({
      name: 'sidecar_approvals_pending',
      help: 'Actions waiting for approval',
      registers: [registry],
    }),
  };
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
