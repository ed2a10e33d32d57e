// An action held for approval under one policy and approved after a reload is released by the policy in force
// then, not by the one it was held under: a lockdown by reload must stop what is already in the approval queue,
// and the audit entry must name the digest of the policy that actually decided. (Found by review, round 4.)
import { writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { auditEntries, evaluate, useSidecarAndUpstream } from '../reliability/harness.ts';

const rules = (effect: string, name = 'deploy') => `agent: reliability
rules:
  - name: ${name}
    action: shell_exec
    conditions: { command: { starts_with: "deploy" } }
    effect: ${effect}
`;

const ctx = useSidecarAndUpstream({ policy: rules('REQUIRE_APPROVAL') });

describe('an approval granted after a reload', () => {
  it.each([
    {
      name: 'a lockdown that denies the action',
      after: rules('DENY', 'no-deploy'),
      effect: 'DENY',
      reason: 'policy_changed',
    },
    {
      name: 'a policy that no longer names it (default deny)',
      after: rules('ALLOW').replace('deploy"', 'build"'),
      effect: 'DENY',
      reason: 'policy_changed',
    },
    { name: 'a policy that allows it outright', after: rules('ALLOW'), effect: 'ALLOW', reason: 'approved' },
    {
      name: 'a policy that still sends it to approval',
      after: rules('REQUIRE_APPROVAL', 'deploy-v2'),
      effect: 'ALLOW',
      reason: 'approved',
    },
  ])('after $name: $effect ($reason), audited under the new digest', async ({ after, effect, reason }) => {
    const { s } = ctx;
    const sidecar = s.sidecar!;
    await writeFile(s.policyPath, rules('REQUIRE_APPROVAL'));
    await sidecar.policies.reload('test');
    const before = sidecar.policies.current.digest;

    const answer = evaluate(s.url, { type: 'shell_exec', command: 'deploy prod' });
    while (sidecar.approvals.list().length === 0) await sleep(5);
    const pending = sidecar.approvals.list()[0]!;

    await writeFile(s.policyPath, after);
    const reloaded = await sidecar.policies.reload('test');
    expect(reloaded.ok && reloaded.changed).toBe(true);
    expect(sidecar.approvals.approve(pending.id, 'alice@ops', pending.actionHash).ok).toBe(true);
    const held = await answer;

    const entries = (await auditEntries(s.auditPath)).filter(
      (e) => e.decision_id === held.body['decision_id'],
    );
    expect(entries.map((e) => [e.extra?.['approval'], e.policy_digest])).toEqual([
      ['pending', before],
      ['approved', sidecar.policies.current.digest],
    ]);
    expect({ effect: held.body['effect'], reason: entries.at(-1)?.reason }).toEqual({ effect, reason });
  });
});
