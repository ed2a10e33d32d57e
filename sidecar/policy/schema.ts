// The one schema of a policy file: it validates at load time and is published as JSON Schema (docs/policy.schema.json).
import { z } from 'zod';
import { lexCommand } from './normalize/argv.ts';
import { parseCidr } from './normalize/cidr.ts';
import { hostGlobProblem, normalizeHostName } from './normalize/host.ts';
import { normalizePath } from './normalize/path.ts';
import { normalizeUrl } from './normalize/url.ts';
import { EFFECTS } from './types.ts';

export const AGENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const ARGS_KEY = /^args\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

const nonEmptyList = <T extends z.ZodType>(item: T) => z.array(item).min(1, 'must list at least one value');
const oneOrMore = <T extends z.ZodType>(item: T) => z.union([item, nonEmptyList(item)]);

/** A condition object must name at least one operator, or it would match everything. */
function operators<S extends z.ZodRawShape>(shape: S, description: string) {
  return z
    .strictObject(shape)
    .refine((o) => Object.values(o).some((v) => v !== undefined), 'a condition needs at least one operator')
    .describe(description);
}

const absolutePath = z
  .string()
  .refine((v) => normalizePath(v).ok, 'must be an absolute POSIX path without NUL bytes');
// `format: uri` for editors; the refinement is what the evaluator can compile (http(s), no userinfo, no %2f).
const exactUrl = z
  .string()
  .url({ abort: true })
  .refine(
    (v) => normalizeUrl(v).ok && !v.includes('#'),
    'must be an http(s) URL without userinfo or fragment',
  );
const urlPrefix = z.string().refine((v) => {
  const n = normalizeUrl(v);
  return n.ok && !n.url.hasQuery && !v.includes('#');
}, 'must be an http(s) URL without userinfo, query or fragment');
const safeCommand = z
  .string()
  .refine((v) => lexCommand(v).ok, 'must be a plain command: no shell operators, expansions or redirections');
const hostName = z.string().refine((v) => normalizeHostName(v) !== undefined, 'must be a valid host name');
const GLOB_PROBLEMS = {
  'bad-label': 'must be a host glob with `*` or `**` as whole labels',
  'not-a-dotted-quad':
    'must fit an IPv4 address, since a glob of numeric labels matches IPv4 addresses only: four labels (fewer with `**`), numbers 0-255 without leading zeros; for address ranges use address.in_cidr',
} as const;
const hostGlob = z.string().superRefine((v, ctx) => {
  const problem = hostGlobProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: GLOB_PROBLEMS[problem] });
});
const httpMethod = z.string().regex(/^[A-Za-z]+$/, 'must be an HTTP method');
const cidr = z.string().superRefine((v, ctx) => {
  const parsed = parseCidr(v);
  if (!parsed.ok)
    ctx.addIssue({ code: 'custom', message: `must be an IP address or CIDR (${parsed.detail})` });
});
const scalar = z.union([z.string(), z.number(), z.boolean(), z.null()]);
const claimName = z.string().regex(/^[A-Za-z0-9_.:-]+$/, 'must be a claim name');

export const pathCondition = operators(
  {
    equals: absolutePath.optional(),
    starts_with: absolutePath.optional(),
    in: nonEmptyList(absolutePath).optional(),
  },
  'Normalised absolute path; starts_with respects path segments.',
);
export const commandCondition = operators(
  {
    equals: safeCommand.optional(),
    starts_with: safeCommand.optional(),
    in: nonEmptyList(safeCommand).optional(),
  },
  'Command lexed into argv and compared token by token.',
);
export const urlCondition = operators(
  {
    equals: exactUrl.optional(),
    starts_with: urlPrefix.optional(),
    in: nonEmptyList(exactUrl).optional(),
  },
  'WHATWG-normalised URL; starts_with compares origin exactly and path by segments.',
);
export const hostCondition = operators(
  {
    equals: hostName.optional(),
    in: nonEmptyList(hostName).optional(),
    glob: oneOrMore(hostGlob).optional(),
  },
  'Host of the URL, lower-case and IDNA-normalised.',
);
export const methodCondition = operators(
  { equals: httpMethod.optional(), in: nonEmptyList(httpMethod).optional() },
  'HTTP method, compared upper-case.',
);
export const addressCondition = operators(
  { in_cidr: nonEmptyList(cidr).optional() },
  'ALLOW and REQUIRE_APPROVAL: every resolved address must fall in one of these ranges (required to reach non-public addresses). DENY: matches when any resolved address does.',
);
export const exactStringCondition = operators(
  { equals: z.string().optional(), in: nonEmptyList(z.string()).optional() },
  'Exact, case-sensitive string comparison.',
);
export const modelCondition = operators(
  {
    equals: z.string().optional(),
    in: nonEmptyList(z.string()).optional(),
    starts_with: z.string().min(1).optional(),
  },
  'Model name, exact or plain string prefix.',
);
export const argCondition = operators(
  {
    equals: scalar.optional(),
    in: nonEmptyList(scalar).optional(),
    starts_with: z.string().optional(),
    gt: z.number().optional(),
    gte: z.number().optional(),
    lt: z.number().optional(),
    lte: z.number().optional(),
    equals_claim: claimName.optional(),
  },
  'A tool argument, addressed as args.<dotted.key>. Types are strict: 5 is not "5".',
);

const fileConditions = z.strictObject({ path: pathCondition.optional() });
const toolConditions = z
  .strictObject({ tool: exactStringCondition.optional() })
  .catchall(argCondition)
  .superRefine((obj, ctx) => {
    for (const key of Object.keys(obj)) {
      if (key !== 'tool' && !ARGS_KEY.test(key)) {
        ctx.addIssue({ code: 'unrecognized_keys', keys: [key], path: [], input: obj, message: '' });
      }
    }
  });
const CONDITIONS = {
  file_read: fileConditions,
  file_write: fileConditions,
  shell_exec: z.strictObject({ command: commandCondition.optional() }),
  network: z.strictObject({
    url: urlCondition.optional(),
    host: hostCondition.optional(),
    method: methodCondition.optional(),
    address: addressCondition.optional(),
  }),
  tool_call: toolConditions,
  model: z.strictObject({ model: modelCondition.optional() }),
} as const;

/** Which condition fields each action accepts: used for error messages and docs. */
export const CONDITION_FIELDS: Readonly<Record<keyof typeof CONDITIONS, readonly string[]>> = {
  file_read: ['path'],
  file_write: ['path'],
  shell_exec: ['command'],
  network: ['url', 'host', 'method', 'address'],
  tool_call: ['tool', 'args.<dotted.key>'],
  model: ['model'],
};

export const rateLimitSchema = z.strictObject({
  max: z.number().int().positive(),
  per: z.enum(['second', 'minute', 'hour', 'day']),
});

function ruleFor<A extends keyof typeof CONDITIONS>(action: A) {
  return z.strictObject({
    name: z.string().min(1, 'must not be empty'),
    description: z.string().optional(),
    action: z.literal(action),
    conditions: CONDITIONS[action].optional(),
    effect: z.enum(EFFECTS),
    rate_limit: rateLimitSchema.optional(),
  });
}

export const ruleSchema = z.discriminatedUnion('action', [
  ruleFor('file_read'),
  ruleFor('file_write'),
  ruleFor('shell_exec'),
  ruleFor('network'),
  ruleFor('tool_call'),
  ruleFor('model'),
]);

/** A spending cap for this agent's model calls, per UTC day or month; enforced by the model gateway. */
export const budgetSchema = z
  .strictObject({
    name: z.string().min(1, 'must not be empty'),
    period: z.enum(['day', 'month']),
    max_tokens: z.number().int().positive().optional().describe('Input, cache and output tokens together.'),
    max_usd: z.number().positive().optional().describe('Cost from the gateway price table, in US dollars.'),
  })
  .refine(
    (b) => b.max_tokens !== undefined || b.max_usd !== undefined,
    'a budget needs max_tokens or max_usd',
  );

export const policySchema = z
  .strictObject({
    version: z.literal(1).optional().describe('Policy format version; only 1 exists.'),
    agent: z
      .string()
      .min(1, 'must not be empty')
      .regex(AGENT_NAME, 'must be letters, digits, ".", "_" or "-", starting with a letter or digit'),
    description: z.string().optional(),
    rules: z.array(ruleSchema),
    budgets: z.array(budgetSchema).optional().describe('Model spending caps; every one applies.'),
  })
  .superRefine((doc, ctx) => {
    const budgets = new Set<string>();
    doc.budgets?.forEach((b, i) => {
      if (budgets.has(b.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['budgets', i, 'name'],
          message: `duplicate budget name "${b.name}"`,
        });
      }
      budgets.add(b.name);
    });
    const seen = new Set<string>();
    doc.rules.forEach((rule, i) => {
      if (seen.has(rule.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['rules', i, 'name'],
          message: `duplicate rule name "${rule.name}"`,
        });
      }
      seen.add(rule.name);
    });
  });

export type PolicyDocument = z.infer<typeof policySchema>;
export type RuleDocument = z.infer<typeof ruleSchema>;
export type ConditionOps = Readonly<Record<string, unknown>>;

/** The published JSON Schema (draft 2020-12), for editors and other tools. */
export function policyJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(policySchema, {
    target: 'draft-2020-12',
    unrepresentable: 'any',
    override: (ctx) => {
      if (ctx.zodSchema === toolConditions)
        ctx.jsonSchema.propertyNames = { pattern: `^(tool|${ARGS_KEY.source.slice(1, -1)})$` };
    },
  }) as Record<string, unknown>;
  return { ...schema, $id: 'agent-sidecar/policy.schema.json', title: 'agent-sidecar policy' };
}
