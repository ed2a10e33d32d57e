// sidecar_decision_duration_seconds is the time to reach a verdict "excluding approval waits" (its help text): a
// held action does not put the human's minutes into the decision latency.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import type { AuditRecord } from '../../../sidecar/audit/entry.ts';
import { type ApprovalGate, SidecarEnforcer } from '../../../sidecar/server/enforcer.ts';
import { createMetrics } from '../../../sidecar/server/metrics.ts';
import { PolicyHolder } from '../../../sidecar/server/policy-holder.ts';
import { RateLimiter } from '../../../sidecar/server/rate-limiter.ts';

const POLICY = `
agent: tester
rules:
  - name: approve-deploy
    action: shell_exec
    conditions: { command: { starts_with: "npm run deploy" } }
    effect: REQUIRE_APPROVAL
`;

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('decision latency metric and approval waits', () => {
  it('does not count the wait for a human in sidecar_decision_duration_seconds', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'latency-approvals-latency-'));
    dirs.push(dir);
    const file = join(dir, 'policy.yaml');
    await writeFile(file, POLICY);
    const metrics = createMetrics();
    const logger = pino({ level: 'silent' });
    const policies = await PolicyHolder.load(file, logger, metrics);
    const WAIT_MS = 400;
    const approvals: ApprovalGate = {
      request: () =>
        new Promise((r) => setTimeout(() => r({ outcome: 'approved', approver: 'alice@ops' }), WAIT_MS)),
    };
    const enforcer = new SidecarEnforcer({
      policies,
      audit: { append: async (r: AuditRecord) => r as never },
      approvals,
      limiter: new RateLimiter(),
      metrics,
      logger,
    });
    const verdict = await enforcer.decide({
      kind: 'evaluate',
      action: { type: 'shell_exec', command: 'npm run deploy' },
    });
    expect(verdict.effect).toBe('ALLOW');
    const { values } = await metrics.decisionSeconds.get();
    const sum = values.find((v) => v.metricName === 'sidecar_decision_duration_seconds_sum')!.value;
    // Evaluation and two in-memory audit appends take well under 100 ms; the approval wait was 400 ms.
    expect(sum, `decision duration observed: ${sum}s`).toBeLessThan(0.1);
  });
});
