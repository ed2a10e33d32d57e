// A plain audit record for the chain and verify suites: agent and index make every one distinct.
import type { AuditRecord } from '../../../sidecar/audit/entry.ts';

export function record(agent: string, i: number): AuditRecord {
  return {
    decision_id: `d-${agent}-${i}`,
    agent,
    kind: 'evaluate',
    action: { type: 'shell_exec', command: `ls ${i}` },
    effect: 'ALLOW',
    rule: 'ls',
    reason: 'matched',
    policy_digest: 'a'.repeat(64),
  };
}
