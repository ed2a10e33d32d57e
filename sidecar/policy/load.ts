// Parses policy text into a validated document, or into every problem found as `file:line:col: message`.
import {
  type Document,
  isMap,
  isPair,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  Parser,
  parseDocument,
  type Scalar,
  visit,
} from 'yaml';
import type { z } from 'zod';
import { isExactDecimal } from './exact-number.ts';
import { CONDITION_FIELDS, type PolicyDocument, policySchema } from './schema.ts';

export interface Diagnostic {
  readonly file: string;
  readonly line: number;
  readonly col: number;
  readonly message: string;
}

export type ParseResult =
  | { readonly ok: true; readonly document: PolicyDocument }
  | { readonly ok: false; readonly diagnostics: readonly Diagnostic[] };

export function formatDiagnostic(d: Diagnostic): string {
  return `${d.file}:${d.line}:${d.col}: ${d.message}`;
}

export function parsePolicyText(text: string, file: string): ParseResult {
  return parseYamlWithSchema(text, file, policySchema, duplicateRuleNames);
}

/** Validates YAML text against a schema, mapping every issue to `file:line:col`. */
export function parseYamlWithSchema<T>(
  text: string,
  file: string,
  schema: z.ZodType<T>,
  extraChecks?: (value: unknown) => z.core.$ZodIssue[],
): { ok: true; document: T } | { ok: false; diagnostics: readonly Diagnostic[] } {
  // A byte order mark is not part of line 1: parse without it, so every offset (and column) is the editor's.
  const source = text.startsWith('\ufeff') ? text.slice(1) : text;
  const lineCounter = new LineCounter();
  const doc = parseDocument(source, { lineCounter, uniqueKeys: true, prettyErrors: false, strict: true });
  const at = (offset: number | undefined, message: string): Diagnostic => {
    const pos = lineCounter.linePos(offset ?? 0);
    return { file, line: pos.line, col: pos.col, message };
  };
  // YAML-level problems (syntax, duplicate keys, unknown tags) come first; warnings count as errors too.
  const yamlErrors = [...doc.errors, ...doc.warnings];
  const yamlProblems = yamlErrors.map((e) => at(e.pos[0], e.message.split('\n')[0] ?? e.message));
  // `%YAML 1.1` would switch the parser to YAML 1.1 (merge keys, `off`/`y` booleans, octal, sexagesimal).
  const versionProblems = yamlVersionDirectives(source).map((d) => at(d.offset, d.message));
  if (versionProblems.length > 0)
    return { ok: false, diagnostics: sortDiagnostics(dedupe([...yamlProblems, ...versionProblems])) };
  // Duplicate keys still leave a usable tree, so keep going and report schema problems too.
  if (yamlErrors.some((e) => e.code !== 'DUPLICATE_KEY'))
    return { ok: false, diagnostics: sortDiagnostics(yamlProblems) };
  // Merge keys are refused and cut out of the tree before any value is built, so nothing is ever merged.
  yamlProblems.push(...removeMergeKeys(doc).map((d) => at(d.offset, d.message)));
  // A number that would not be read as written is refused where it is written; the tree is still usable, so go on.
  yamlProblems.push(...inexactNumbers(doc).map((d) => at(d.offset, d.message)));

  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 50 });
  } catch (err) {
    return { ok: false, diagnostics: [at(0, err instanceof Error ? err.message : 'invalid YAML')] };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return {
      ok: false,
      diagnostics: [...yamlProblems, at(doc.contents?.range?.[0], 'the document must be a mapping')],
    };
  }
  const result = schema.safeParse(value);
  const issues = [...(result.success ? [] : result.error.issues), ...(extraChecks?.(value) ?? [])];
  if (issues.length === 0 && yamlProblems.length === 0 && result.success)
    return { ok: true, document: result.data };
  const diagnostics = [
    ...yamlProblems,
    ...issues.flatMap((issue) => describeIssue(issue, value, doc.contents, at)),
  ];
  return { ok: false, diagnostics: sortDiagnostics(dedupe(diagnostics)) };
}

interface Located {
  readonly offset: number | undefined;
  readonly message: string;
}

/** Every `%YAML` directive that names a version other than 1.2 (the document must be read as YAML 1.2). */
function yamlVersionDirectives(source: string): Located[] {
  const found: Located[] = [];
  for (const token of new Parser().parse(source)) {
    if (token.type !== 'directive' || !/^%YAML(?:[ \t]|$)/.test(token.source)) continue;
    const version = token.source.split(/[ \t]+/)[1] ?? '';
    if (version === '1.2') continue;
    const named = version === '' ? 'no version' : `version ${version}`;
    found.push({
      offset: token.offset,
      message: `%YAML directive names ${named}: only YAML 1.2 is accepted (remove the directive or write %YAML 1.2)`,
    });
  }
  return found;
}

const MERGE_TAG = 'tag:yaml.org,2002:merge';

const MERGE_MESSAGE =
  'merge key "<<" is not allowed: YAML 1.2 has no merge keys (write the keys out in full)';

const isMergeScalar = (node: unknown): node is Scalar =>
  isScalar(node) &&
  (node.tag === MERGE_TAG ||
    node.value === '<<' ||
    (typeof node.value === 'symbol' && node.value.description === '<<'));

/**
 * Removes every mapping pair whose key is `<<` or is tagged `!!merge`, and says where each was; a `!!merge` scalar
 * anywhere else (say, anchored as a value for use as a key later) is refused too. YAML 1.2 has no merge key, but
 * the yaml package still merges a `!!merge`-tagged key, so these must never reach `toJS`.
 */
function removeMergeKeys(doc: Document): Located[] {
  const found: Located[] = [];
  visit(doc, {
    Pair(_key, pair) {
      if (!isMergeScalar(pair.key)) return undefined;
      found.push({ offset: pair.key.range?.[0], message: MERGE_MESSAGE });
      return visit.REMOVE;
    },
    Scalar(_key, node) {
      if (node.tag === MERGE_TAG) found.push({ offset: node.range?.[0], message: MERGE_MESSAGE });
      return undefined;
    },
  });
  return found;
}

/**
 * Every number whose value would not be the number written. The yaml package silently reads 9007199254740993 as
 * ...992 and 1e999 as Infinity, so the policy would judge a number its author never wrote, and one no request may
 * carry (the evaluate API and the MCP gateway refuse both). "Exact" means what it means for requests
 * (exact-number.ts): 0.1 and 9007199254740992 read back as written and load. Keys are checked too, since
 * `{ 9007199254740993: x }` would become the key "9007199254740992".
 */
function inexactNumbers(doc: Document): Located[] {
  const found: Located[] = [];
  visit(doc, {
    Scalar(_key, node) {
      if (typeof node.value !== 'number') return undefined;
      // `source` is the scalar's text as written (without quotes, for `!!int "12"`).
      const problem = numberProblem(node.source ?? String(node.value), node.value);
      if (problem !== undefined) found.push({ offset: node.range?.[0], message: problem });
      return undefined;
    },
  });
  return found;
}

// The YAML 1.2 core schema's integers: decimal, and unsigned 0x hex and 0o octal.
const DECIMAL_INTEGER = /^[-+]?[0-9]+$/;
const PREFIXED_INTEGER = /^0x[0-9a-fA-F]+$|^0o[0-7]+$/;

function numberProblem(literal: string, value: number): string | undefined {
  // `.inf`, `.nan` and overflows such as 1e999: JSON has no such number, so a policy must not have one either.
  if (!Number.isFinite(value)) {
    return /^[-+]?\./.test(literal)
      ? `${literal} is not allowed: numbers must be finite, as in JSON`
      : `${literal} is out of range: it would be read as ${value} (numbers must be finite, as in JSON)`;
  }
  // Hex and octal name an integer, so exact means the very same integer (BigInt reads both prefixes).
  const prefixed = PREFIXED_INTEGER.test(literal);
  if (prefixed ? BigInt(literal) === BigInt(value) : isExactDecimal(literal)) return undefined;
  const hint =
    prefixed || DECIMAL_INTEGER.test(literal)
      ? 'integers are exact within ±9007199254740991'
      : value === 0
        ? 'it is too close to zero'
        : 'up to 15 significant digits are always kept';
  return `${literal} cannot be represented exactly: it would be read as ${value} (${hint})`;
}

/** Checked on the raw value too, because the schema's own refinement does not run once a rule fails. */
function duplicateRuleNames(value: unknown): z.core.$ZodIssue[] {
  const rules = (value as { rules?: unknown }).rules;
  if (!Array.isArray(rules)) return [];
  const seen = new Set<unknown>();
  const issues: z.core.$ZodIssue[] = [];
  rules.forEach((rule, i) => {
    const name = (rule as { name?: unknown } | null)?.name;
    if (typeof name !== 'string') return;
    if (seen.has(name)) {
      issues.push({
        code: 'custom',
        path: ['rules', i, 'name'],
        message: `duplicate rule name "${name}"`,
        input: name,
      });
    }
    seen.add(name);
  });
  return issues;
}

type At = (offset: number | undefined, message: string) => Diagnostic;

function describeIssue(issue: z.core.$ZodIssue, value: unknown, root: Node | null, at: At): Diagnostic[] {
  const path = issue.path.map((p) => (typeof p === 'symbol' ? String(p) : p));
  const where = pathLabel(path);
  if (issue.code === 'unrecognized_keys') {
    return issue.keys.map((key) => at(keyOffset(root, path, key), unknownKeyMessage(path, key, value)));
  }
  const node = nodeAt(root, path);
  const last = path.at(-1);
  // A refinement about a whole section is about its key: a block section's own range starts at its first entry, a
  // line below the key the reader is looking for, and an empty one has no text of its own.
  const section = ((isMap(node) || isSeq(node)) && !node.flow) || (isScalar(node) && node.value === null);
  const offset =
    issue.code === 'custom' && section && typeof last === 'string'
      ? keyOffset(root, path.slice(0, -1), last)
      : (node?.range?.[0] ?? nodeAt(root, path.slice(0, -1))?.range?.[0]);
  if ((issue.code === 'invalid_type' || issue.code === 'invalid_value') && node === undefined) {
    return [at(offset, `${where}: is required`)];
  }
  if (issue.code === 'invalid_union' && 'note' in issue && issue.note === 'No matching discriminator') {
    const actions = Object.keys(CONDITION_FIELDS).join(', ');
    const given = getIn(value, path);
    const what = given === undefined ? 'is required' : `unknown action ${JSON.stringify(given)}`;
    return [at(offset, `${where}: ${what} (expected one of: ${actions})`)];
  }
  return [at(offset, `${where}: ${issue.message}`)];
}

function unknownKeyMessage(path: readonly PropertyKey[], key: string, value: unknown): string {
  const where = pathLabel(path);
  if (path.at(-1) === 'conditions') {
    const action = getIn(value, [...path.slice(0, -1), 'action']);
    const fields = CONDITION_FIELDS[action as keyof typeof CONDITION_FIELDS];
    if (fields) {
      return `${where}: condition field "${key}" does not apply to action ${String(action)} (allowed: ${fields.join(', ')})`;
    }
  }
  if (path.at(-2) === 'conditions') {
    return `${where}: unknown operator "${key}"`;
  }
  return `${where}: unknown key "${key}"`;
}

function pathLabel(path: readonly PropertyKey[]): string {
  if (path.length === 0) return 'policy';
  // A key with dots in it (`args.user.id`) is one key: bracket it, so the operator after it stays visible.
  const label = (p: PropertyKey, i: number) => {
    if (typeof p === 'number') return `[${p}]`;
    const key = String(p);
    if (key.includes('.')) return `[${JSON.stringify(key)}]`;
    return i === 0 ? key : `.${key}`;
  };
  return path.map(label).join('');
}

function getIn(value: unknown, path: readonly PropertyKey[]): unknown {
  let cur = value;
  for (const p of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[p];
  }
  return cur;
}

function nodeAt(root: Node | null, path: readonly PropertyKey[]): Node | undefined {
  let cur: unknown = root;
  for (const p of path) {
    if (isMap(cur)) {
      const pair = cur.items.find((it) => isPair(it) && isScalar(it.key) && it.key.value === p);
      cur = pair?.value ?? undefined;
    } else if (isSeq(cur) && typeof p === 'number') {
      cur = cur.items[p];
    } else {
      return undefined;
    }
    if (cur === undefined || cur === null) return undefined;
  }
  return (cur ?? undefined) as Node | undefined;
}

function keyOffset(root: Node | null, path: readonly PropertyKey[], key: string): number | undefined {
  const parent = nodeAt(root, path);
  if (isMap(parent)) {
    const pair = parent.items.find((it) => isPair(it) && isScalar(it.key) && it.key.value === key);
    if (pair && isScalar(pair.key)) return pair.key.range?.[0];
  }
  return parent?.range?.[0];
}

function dedupe(list: readonly Diagnostic[]): Diagnostic[] {
  const seen = new Set<string>();
  return list.filter((d) => {
    const k = formatDiagnostic(d);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function sortDiagnostics(list: readonly Diagnostic[]): Diagnostic[] {
  return [...list].sort((a, b) => a.line - b.line || a.col - b.col);
}
