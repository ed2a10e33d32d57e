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
import { normalizeUrl } from './normalize/url.ts';
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

/** A spending cap from the policy's `budgets` section; the model gateway enforces it. */
export interface BudgetInfo {
  readonly name: string;
  readonly period: 'day' | 'month';
  readonly maxTokens?: number;
  readonly maxUsd?: number;
}

interface CompiledRule extends RuleInfo {
  readonly test: FieldTest;
}

/**
 * Rules of one action type, plus an index by the one field most rules pin down (tool name, URL host).
 * A rule whose indexed field cannot equal the action's value evaluates to NO whatever its other
 * conditions say, so skipping it keeps first-match order and the three-valued semantics intact.
 */
interface RuleTable {
  readonly all: readonly CompiledRule[];
  readonly keyOf?: (f: Facts) => string | null;
  readonly byKey?: ReadonlyMap<string, readonly CompiledRule[]>;
  readonly unkeyed?: readonly CompiledRule[];
}

function indexKeys(rule: CompiledRule): readonly string[] | undefined {
  const ops = (field: string) => rule.conditions[field] as Record<string, unknown> | undefined;
  if (rule.action === 'tool_call') {
    const t = ops('tool');
    if (!t) return undefined;
    if (t['equals'] !== undefined) return [String(t['equals'])];
    return (t['in'] as string[] | undefined) ?? undefined;
  }
  if (rule.action === 'network') {
    // Any one url operator pins the host (operators AND together); equals/starts_with pin one host, `in` a few.
    const url = ops('url');
    const pinned = url?.['starts_with'] ?? url?.['equals'];
    const values = pinned !== undefined ? [pinned] : ((url?.['in'] as unknown[] | undefined) ?? []);
    const hosts = values.map((v) => normalizeUrl(v)).map((n) => (n.ok ? n.url.host : undefined));
    if (hosts.length === 0 || hosts.some((h) => h === undefined)) return undefined;
    return hosts as string[];
  }
  return undefined;
}

function buildTable(rules: readonly CompiledRule[]): RuleTable {
  const type = rules[0]?.action;
  if (type !== 'tool_call' && type !== 'network') return { all: rules };
  const keys = rules.map(indexKeys);
  const byKey = new Map<string, CompiledRule[]>();
  for (const ks of keys) for (const k of ks ?? []) byKey.set(k, []);
  const unkeyed: CompiledRule[] = [];
  rules.forEach((rule, i) => {
    const ks = keys[i];
    if (ks === undefined) {
      unkeyed.push(rule);
      for (const list of byKey.values()) list.push(rule);
    } else for (const k of ks) byKey.get(k)?.push(rule);
  });
  const keyOf =
    type === 'tool_call'
      ? (f: Facts) => f.action.tool ?? null
      : (f: Facts) => (f.action.host === undefined ? (f.url()?.host ?? null) : null);
  return { all: rules, keyOf, byKey, unkeyed };
}

function candidates(table: RuleTable, facts: Facts): readonly CompiledRule[] {
  if (!table.keyOf || !table.byKey || !table.unkeyed) return table.all;
  const key = table.keyOf(facts);
  if (key === null) return table.all;
  return table.byKey.get(key) ?? table.unkeyed;
}

const deny = (reason: string, rule: string | null = null): Decision =>
  Object.freeze({ effect: 'DENY', rule, reason });

export class Policy {
  readonly agent: string;
  /** sha256 of the policy file's bytes: recorded in every audit entry. */
  readonly digest: string;
  readonly source: string;
  readonly rules: readonly RuleInfo[];
  readonly budgets: readonly BudgetInfo[];
  readonly #byType: ReadonlyMap<ActionType, RuleTable>;

  constructor(document: PolicyDocument, source: string, digest: string) {
    this.agent = document.agent;
    this.source = source;
    this.digest = digest;
    const compiled = document.rules.map((r): CompiledRule => {
      const conditions = (r.conditions ?? {}) as Record<string, Record<string, unknown> | undefined>;
      const { test, fields } = compileConditions(conditions, r.effect);
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
    this.#byType = new Map([...byType].map(([type, list]) => [type, buildTable(list)]));
    this.rules = Object.freeze(compiled.map(({ test: _t, ...info }) => Object.freeze(info)));
    this.budgets = Object.freeze(
      (document.budgets ?? []).map((b) =>
        Object.freeze({
          name: b.name,
          period: b.period,
          ...(b.max_tokens === undefined ? {} : { maxTokens: b.max_tokens }),
          ...(b.max_usd === undefined ? {} : { maxUsd: b.max_usd }),
        }),
      ),
    );
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
      const table = this.#byType.get(action.type);
      if (!table) return deny(REASONS.defaultDeny);
      const facts = new Facts(action, trusted, opts);
      for (const rule of candidates(table, facts)) {
        // Before DNS a DENY on an address range may or may not match the answer, so it cannot decide yet; the
        // caller resolves only if a later rule could allow, and then evaluates again with the real addresses.
        if (opts.addressesPending && rule.effect === 'DENY' && rule.fields.includes('address')) continue;
        const r = rule.test(facts);
        if (r === YES) return { effect: rule.effect, rule: rule.name, reason: REASONS.matched };
        if (r === UNKNOWN && rule.effect !== 'ALLOW') {
          return { effect: rule.effect, rule: rule.name, reason: REASONS.unevaluable };
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
    for (const rule of this.#byType.get('tool_call')?.all ?? []) {
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
