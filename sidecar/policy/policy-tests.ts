// Policy test cases as YAML data (in the spirit of `opa test`): an action, optional trusted context, the expected outcome.
import { z } from 'zod';
import type { Policy } from './policy.ts';
import { EFFECTS } from './types.ts';

export const policyTestSchema = z.strictObject({
  policy: z
    .string()
    .min(1)
    .optional()
    .describe('Policy file, relative to this test file. Default: <name>.yaml'),
  cases: z
    .array(
      z.strictObject({
        note: z.string().min(1),
        action: z.unknown(),
        claims: z.record(z.string(), z.unknown()).optional(),
        addresses: z.array(z.string()).optional(),
        want: z.enum(EFFECTS),
        want_rule: z.string().nullable().optional(),
        want_reason: z.string().optional(),
      }),
    )
    .min(1, 'a test file needs at least one case'),
});
export type PolicyTestFile = z.infer<typeof policyTestSchema>;

export interface CaseResult {
  readonly note: string;
  readonly pass: boolean;
  readonly got: { effect: string; rule: string | null; reason: string };
  readonly want: { effect: string; rule?: string | null; reason?: string };
}

export function runPolicyTests(policy: Policy, file: PolicyTestFile): CaseResult[] {
  return file.cases.map((c) => {
    const trusted = {
      ...(c.claims ? { claims: c.claims } : {}),
      ...(c.addresses ? { addresses: c.addresses } : {}),
    };
    const got = policy.evaluate(c.action, trusted);
    const pass =
      got.effect === c.want &&
      (c.want_rule === undefined || got.rule === c.want_rule) &&
      (c.want_reason === undefined || got.reason === c.want_reason);
    const want = {
      effect: c.want,
      ...(c.want_rule !== undefined ? { rule: c.want_rule } : {}),
      ...(c.want_reason !== undefined ? { reason: c.want_reason } : {}),
    };
    return { note: c.note, pass, got: { ...got }, want };
  });
}
