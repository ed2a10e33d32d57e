// A compiled, frozen policy bound to one agent: evaluate(action) -> Decision, synchronous and never throwing.
import { parseAction } from './action.ts';
import { canonicalJson, sha256Hex } from './canonical.ts';
import {
  compileConditions,
  type EvalOptions,
  Facts,
  type FieldTest,
  type TrustedContext,
  UNKNOWN,
  YES,
} from './conditions.ts';
import type { Diagnostic } from './load.ts';
import { parsePolicyText } from './load.ts';
import type { PolicyDocument } from './schema.ts';
import { type ActionType, type Decision, type Effect, REASONS } from './types.ts';

export type { EvalOptions, TrustedContext } from './conditions.ts';

export interface RuleInfo {
  readonly name: string;
  readonly action: ActionType;
  readonly effect: Effect;
  /** Condition fields the rule reads, e.g. ['url', 'address']. */
  readonly fields: readonly string[];
  readonly rateLimit?: { readonly max: number; readonly per: 'second' | 'minute' | 'hour' | 'day' };
  readonly conditions: Readonly<Record<string, unknown>>;
}

interface CompiledRule extends RuleInfo {
  readonly test: FieldTest;
}

const deny = (reason: string, rule: string | null = null): Decision => Object.freeze({ effect: 'DENY', rule, reason });

export class Policy {
  readonly agent: string;
  /** sha256 of the policy file's bytes: recorded in every audit entry. */
  readonly digest: string;
  readonly source: string;
  readonly rules: readonly RuleInfo[];
  readonly #byType: ReadonlyMap<ActionType, readonly CompiledRule[]>;

  constructor(document: PolicyDocument, source: string, digest: string) {
    this.agent = document.agent;
    this.source = source;
    this.digest = digest;
    const compiled = document.rules.map((r): CompiledRule => {
      const conditions = (r.conditions ?? {}) as Record<string, Record<string, unknown> | undefined>;
      const { test, fields } = compileConditions(conditions);
      return Object.freeze({
        name: r.name,
        action: r.action,
        effect: r.effect,
        fields: Object.freeze(fields),
        ...(r.rate_limit ? { rateLimit: Object.freeze({ ...r.rate_limit }) } : {}),
        conditions: Object.freeze(structuredClone(conditions)),
        test,
      });
    });
    const byType = new Map<ActionType, CompiledRule[]>();
    for (const rule of compiled) {
      const list = byType.get(rule.action) ?? [];
      list.push(rule);
      byType.set(rule.action, list);
    }
    this.#byType = byType;
    this.rules = Object.freeze(compiled.map(({ test: _t, ...info }) => Object.freeze(info)));
    Object.freeze(this);
  }

  /**
   * First matching rule wins; no match is DENY. An ALLOW rule matches only when every condition holds;
   * a DENY or REQUIRE_APPROVAL rule also matches when a condition cannot be evaluated.
   */
  evaluate(input: unknown, trusted: TrustedContext = {}, opts: EvalOptions = {}): Decision {
    try {
      const parsed = parseAction(input);
      if (!parsed.ok) return deny(parsed.reason);
      const action = parsed.action;
      if (action.agent !== undefined && action.agent !== this.agent) return deny(REASONS.identityMismatch);
      const rules = this.#byType.get(action.type);
      if (!rules) return deny(REASONS.defaultDeny);
      const facts = new Facts(action, trusted, opts);
      for (const rule of rules) {
        const r = rule.test(facts);
        if (r === YES) return { effect: rule.effect, rule: rule.name, reason: REASONS.matched };
        if (r === UNKNOWN && rule.effect !== 'ALLOW') {
          return { effect: rule.effect, rule: rule.name, reason: 'unevaluable_condition' };
        }
      }
      return deny(REASONS.defaultDeny);
    } catch {
      return deny(REASONS.internalError);
    }
  }

  rule(name: string): RuleInfo | undefined {
    return this.rules.find((r) => r.name === name);
  }

  /**
   * Whether some call of `tool` could be allowed or sent to approval: the tools/list filter.
   * A tool is hidden when no ALLOW/REQUIRE_APPROVAL rule could match it before an unconditional DENY does.
   */
  mayExposeTool(tool: string): boolean {
    for (const rule of this.#byType.get('tool_call') ?? []) {
      const toolOps = rule.conditions['tool'] as { equals?: string; in?: string[] } | undefined;
      const matchesTool =
        toolOps === undefined ||
        ((toolOps.equals === undefined || toolOps.equals === tool) &&
          (toolOps.in === undefined || toolOps.in.includes(tool)));
      if (!matchesTool) continue;
      if (rule.effect !== 'DENY') return true;
      if (rule.fields.every((f) => f === 'tool')) return false;
    }
    return false;
  }
}

export type CompileResult =
  | { readonly ok: true; readonly policy: Policy }
  | { readonly ok: false; readonly diagnostics: readonly Diagnostic[] };

/** Parse, validate and compile policy text. Pure: the caller reads the file. */
export function compilePolicy(text: string, source: string): CompileResult {
  const parsed = parsePolicyText(text, source);
  if (!parsed.ok) return parsed;
  return { ok: true, policy: new Policy(parsed.document, source, sha256Hex(text)) };
}

/** The canonical hash of an action: binds approvals and context tokens to exactly one action. */
export function actionDigest(action: unknown): string {
  return sha256Hex(canonicalJson(action));
}
