// Compiles a rule's conditions into one three-valued test: YES, NO, or UNKNOWN when a field cannot be evaluated.
import { argvEquals, argvStartsWith, lexCommand } from './normalize/argv.ts';
import { compileCidrList, isIpAddress } from './normalize/cidr.ts';
import { compileHostGlob, normalizeHostName } from './normalize/host.ts';
import { type NormalizedPath, normalizePath, segmentsStartWith } from './normalize/path.ts';
import { type NormalizedUrl, normalizeUrl, urlStartsWith } from './normalize/url.ts';
import type { Action, Effect } from './types.ts';

export const NO = 0;
export const YES = 1;
export const UNKNOWN = 2;
export type Tri = typeof NO | typeof YES | typeof UNKNOWN;

/** What the sidecar itself established about an action; never taken from the agent's JSON. */
export interface TrustedContext {
  readonly addresses?: readonly string[];
  readonly claims?: Readonly<Record<string, unknown>>;
}

export interface EvalOptions {
  /**
   * Before DNS: may some answer let this action through? `address` conditions of ALLOW and REQUIRE_APPROVAL rules
   * count as satisfied, DENY rules that read `address` are passed over. Only a non-DENY result is worth a lookup,
   * and the caller must evaluate again with the addresses it got.
   */
  readonly addressesPending?: boolean;
}

/** Per-evaluation facts, each normalised at most once and only when a rule asks. */
export class Facts {
  readonly action: Action;
  readonly trusted: TrustedContext;
  readonly opts: EvalOptions;
  #path: NormalizedPath | null | undefined;
  #url: NormalizedUrl | null | undefined;
  #argv: readonly string[] | null | undefined;
  #host: string | null | undefined;

  constructor(action: Action, trusted: TrustedContext, opts: EvalOptions) {
    this.action = action;
    this.trusted = trusted;
    this.opts = opts;
  }

  path(): NormalizedPath | null {
    if (this.#path === undefined) {
      const n = normalizePath(this.action.path);
      this.#path = n.ok ? n : null;
    }
    return this.#path;
  }

  url(): NormalizedUrl | null {
    if (this.#url === undefined) {
      const n = this.action.url === undefined ? undefined : normalizeUrl(this.action.url);
      this.#url = n?.ok ? n.url : null;
    }
    return this.#url;
  }

  argv(): readonly string[] | null {
    if (this.#argv === undefined) {
      const { argv, command } = this.action;
      if (argv !== undefined) this.#argv = argv.some((a) => a.includes('\0')) ? null : argv;
      else if (command !== undefined) {
        const lexed = lexCommand(command);
        this.#argv = lexed.ok ? lexed.argv : null;
      } else this.#argv = null;
    }
    return this.#argv;
  }

  host(): string | null {
    if (this.#host === undefined) {
      const fromUrl = this.action.url === undefined ? undefined : this.url()?.host;
      const given = this.action.host === undefined ? undefined : normalizeHostName(this.action.host);
      if (this.action.url !== undefined) {
        // A `host` that disagrees with the URL is ambiguous: refuse to decide on it.
        this.#host =
          fromUrl !== undefined && (this.action.host === undefined || given === fromUrl) ? fromUrl : null;
      } else this.#host = given ?? null;
    }
    return this.#host;
  }
}

export type FieldTest = (f: Facts) => Tri;
type Ops = Readonly<Record<string, unknown>>;

const all = (tests: readonly FieldTest[]): FieldTest => {
  if (tests.length === 1) return tests[0] as FieldTest;
  return (f) => {
    let result: Tri = YES;
    for (const t of tests) {
      const r = t(f);
      if (r === NO) return NO;
      if (r === UNKNOWN) result = UNKNOWN;
    }
    return result;
  };
};
const tri = (b: boolean): Tri => (b ? YES : NO);

function mustPath(v: unknown): NormalizedPath {
  const n = normalizePath(v);
  if (!n.ok) throw new Error(`invalid path ${String(v)}`);
  return n;
}
function mustUrl(v: unknown): NormalizedUrl {
  const n = normalizeUrl(v);
  if (!n.ok) throw new Error(`invalid url ${String(v)}`);
  return n.url;
}
function mustArgv(v: unknown): readonly string[] {
  const n = lexCommand(String(v));
  if (!n.ok) throw new Error(`invalid command ${String(v)}`);
  return n.argv;
}
function mustHost(v: unknown): string {
  const h = normalizeHostName(String(v));
  if (h === undefined) throw new Error(`invalid host ${String(v)}`);
  return h;
}

function pathTest(ops: Ops): FieldTest {
  const tests: FieldTest[] = [];
  if (ops['equals'] !== undefined) {
    const want = mustPath(ops['equals']).path;
    tests.push((f) => {
      const p = f.path();
      return p ? tri(p.path === want) : UNKNOWN;
    });
  }
  if (ops['starts_with'] !== undefined) {
    const prefix = mustPath(ops['starts_with']).segments;
    tests.push((f) => {
      const p = f.path();
      return p ? tri(segmentsStartWith(p.segments, prefix)) : UNKNOWN;
    });
  }
  if (ops['in'] !== undefined) {
    const set = new Set((ops['in'] as unknown[]).map((v) => mustPath(v).path));
    tests.push((f) => {
      const p = f.path();
      return p ? tri(set.has(p.path)) : UNKNOWN;
    });
  }
  return all(tests);
}

function commandTest(ops: Ops): FieldTest {
  const tests: FieldTest[] = [];
  if (ops['equals'] !== undefined) {
    const want = mustArgv(ops['equals']);
    tests.push((f) => {
      const a = f.argv();
      return a ? tri(argvEquals(a, want)) : UNKNOWN;
    });
  }
  if (ops['starts_with'] !== undefined) {
    const prefix = mustArgv(ops['starts_with']);
    tests.push((f) => {
      const a = f.argv();
      return a ? tri(argvStartsWith(a, prefix)) : UNKNOWN;
    });
  }
  if (ops['in'] !== undefined) {
    const list = (ops['in'] as unknown[]).map(mustArgv);
    tests.push((f) => {
      const a = f.argv();
      return a ? tri(list.some((w) => argvEquals(a, w))) : UNKNOWN;
    });
  }
  return all(tests);
}

const isConnect = (f: Facts) => f.action.method?.toUpperCase() === 'CONNECT';

const sameOrigin = (a: NormalizedUrl, b: NormalizedUrl) =>
  a.scheme === b.scheme && a.host === b.host && a.port === b.port;

function urlTest(ops: Ops): FieldTest {
  const tests: FieldTest[] = [];
  // A tunnel shows only the origin: exact URLs on that origin cannot be told apart from it (UNKNOWN).
  if (ops['equals'] !== undefined) {
    const want = mustUrl(ops['equals']);
    tests.push((f) => {
      const u = f.url();
      if (!u) return UNKNOWN;
      if (isConnect(f)) return sameOrigin(u, want) ? UNKNOWN : NO;
      return tri(u.canonical === want.canonical);
    });
  }
  if (ops['starts_with'] !== undefined) {
    const prefix = mustUrl(ops['starts_with']);
    const deep = prefix.segments.length > 0;
    tests.push((f) => {
      const u = f.url();
      if (!u) return UNKNOWN;
      // A tunnel shows only the origin: it can never satisfy a path-scoped prefix, but a path-scoped
      // DENY on the same origin still catches it (UNKNOWN), since the tunnel could reach that path.
      if (isConnect(f) && deep) return urlStartsWith(u, { ...prefix, segments: [] }) ? UNKNOWN : NO;
      return tri(urlStartsWith(u, prefix));
    });
  }
  if (ops['in'] !== undefined) {
    const list = (ops['in'] as unknown[]).map(mustUrl);
    const set = new Set(list.map((w) => w.canonical));
    tests.push((f) => {
      const u = f.url();
      if (!u) return UNKNOWN;
      if (isConnect(f)) return list.some((w) => sameOrigin(u, w)) ? UNKNOWN : NO;
      return tri(set.has(u.canonical));
    });
  }
  return all(tests);
}

function hostTest(ops: Ops): FieldTest {
  const tests: FieldTest[] = [];
  if (ops['equals'] !== undefined) {
    const want = mustHost(ops['equals']);
    tests.push((f) => {
      const h = f.host();
      return h === null ? UNKNOWN : tri(h === want);
    });
  }
  if (ops['in'] !== undefined) {
    const set = new Set((ops['in'] as unknown[]).map(mustHost));
    tests.push((f) => {
      const h = f.host();
      return h === null ? UNKNOWN : tri(set.has(h));
    });
  }
  if (ops['glob'] !== undefined) {
    const globs = ([] as unknown[]).concat(ops['glob']).map((g) => {
      const m = compileHostGlob(String(g));
      if (!m) throw new Error(`invalid host glob ${String(g)}`);
      return m;
    });
    tests.push((f) => {
      const h = f.host();
      return h === null ? UNKNOWN : tri(globs.some((m) => m(h)));
    });
  }
  return all(tests);
}

function methodTest(ops: Ops): FieldTest {
  const equals = ops['equals'] === undefined ? undefined : String(ops['equals']).toUpperCase();
  const list = (ops['in'] as unknown[] | undefined)?.map((v) => String(v).toUpperCase());
  const tests: FieldTest[] = [];
  if (equals !== undefined) {
    tests.push((f) => {
      const m = methodOf(f);
      return m === undefined ? UNKNOWN : tri(m === equals);
    });
  }
  if (list !== undefined) {
    const set = new Set(list);
    tests.push((f) => {
      const m = methodOf(f);
      return m === undefined ? UNKNOWN : tri(set.has(m));
    });
  }
  // A tunnel hides the methods it will carry, as it hides the paths: unless the rule matches CONNECT itself (every
  // operator admits it), whether it applies is unknown, so an ALLOW on methods never opens a tunnel and a DENY on
  // methods still closes it.
  const admitsConnect = (equals ?? 'CONNECT') === 'CONNECT' && (list?.includes('CONNECT') ?? true);
  const test = all(tests);
  return (f) => (isConnect(f) && !admitsConnect ? UNKNOWN : test(f));
}

// A method is an HTTP token; anything else (blank, CR/LF, "poſt" that upper-cases to POST) is unevaluable.
const HTTP_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const methodOf = (f: Facts): string | undefined =>
  f.action.method !== undefined && HTTP_TOKEN.test(f.action.method)
    ? f.action.method.toUpperCase()
    : undefined;

/**
 * A rule that can let traffic through (ALLOW, REQUIRE_APPROVAL) needs every resolved address inside its ranges; a
 * DENY range catches an answer with any address inside, since the connection may be pinned to that one.
 */
function addressTest(ops: Ops, effect: Effect): FieldTest {
  const inRange = compileCidrList(ops['in_cidr'] as string[]);
  if (!inRange) throw new Error('invalid cidr list');
  const anyInside = effect === 'DENY';
  return (f) => {
    const addrs = f.trusted.addresses;
    if (addrs === undefined) return f.opts.addressesPending ? YES : UNKNOWN;
    // Something that is not an IP cannot be placed in or out of a range: unevaluable, so a DENY range catches it.
    if (addrs.length === 0 || !addrs.every(isIpAddress)) return UNKNOWN;
    return tri(anyInside ? addrs.some(inRange) : addrs.every(inRange));
  };
}

function exactStringTest(ops: Ops, read: (a: Action) => string | undefined): FieldTest {
  const tests: FieldTest[] = [];
  if (ops['equals'] !== undefined) {
    const want = ops['equals'];
    tests.push((f) => {
      const v = read(f.action);
      return v === undefined ? UNKNOWN : tri(v === want);
    });
  }
  if (ops['in'] !== undefined) {
    const set = new Set(ops['in'] as unknown[]);
    tests.push((f) => {
      const v = read(f.action);
      return v === undefined ? UNKNOWN : tri(set.has(v));
    });
  }
  if (ops['starts_with'] !== undefined) {
    const prefix = String(ops['starts_with']);
    tests.push((f) => {
      const v = read(f.action);
      return v === undefined ? UNKNOWN : tri(v.startsWith(prefix));
    });
  }
  return all(tests);
}

// JSON.parse makes `__proto__` an own key, and a tool that merges its arguments may treat these keys specially.
const PROTOTYPE_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

/** Reads `args.a.b` through own properties only, and never through `__proto__`, `constructor` or `prototype`. */
export function readArg(args: unknown, keys: readonly string[]): unknown {
  let cur = args;
  for (const k of keys) {
    if (PROTOTYPE_KEYS.has(k)) return undefined;
    if (cur === null || typeof cur !== 'object' || Array.isArray(cur) || !Object.hasOwn(cur, k))
      return undefined;
    cur = (cur as Record<string, unknown>)[k];
  }
  return cur;
}

const typeOf = (v: unknown) => (v === null ? 'null' : typeof v);
const isScalarClaim = (c: unknown) =>
  typeof c === 'string' || typeof c === 'number' || typeof c === 'boolean';

function argTest(key: string, ops: Ops): FieldTest {
  const keys = key.slice('args.'.length).split('.');
  const read = (f: Facts) => readArg(f.action.args, keys);
  const tests: FieldTest[] = [];
  if (ops['equals'] !== undefined) {
    const want = ops['equals'];
    tests.push((f) => {
      const v = read(f);
      return v === undefined || typeOf(v) !== typeOf(want) ? UNKNOWN : tri(v === want);
    });
  }
  if (ops['in'] !== undefined) {
    const list = ops['in'] as unknown[];
    // A value is compared with each entry: equal to one is yes, but "no" needs every entry to be of its type, since
    // against an entry of another type (`"0"` against 0) the answer is unevaluable, as it is for `equals`.
    tests.push((f) => {
      const v = read(f);
      if (v === undefined) return UNKNOWN;
      if (list.includes(v)) return YES;
      return list.every((w) => typeOf(w) === typeOf(v)) ? NO : UNKNOWN;
    });
  }
  if (ops['starts_with'] !== undefined) {
    const prefix = String(ops['starts_with']);
    tests.push((f) => {
      const v = read(f);
      return typeof v !== 'string' ? UNKNOWN : tri(v.startsWith(prefix));
    });
  }
  const bounds: Array<[string, (v: number, b: number) => boolean]> = [
    ['gt', (v, b) => v > b],
    ['gte', (v, b) => v >= b],
    ['lt', (v, b) => v < b],
    ['lte', (v, b) => v <= b],
  ];
  for (const [op, cmp] of bounds) {
    if (ops[op] === undefined) continue;
    const bound = ops[op] as number;
    tests.push((f) => {
      const v = read(f);
      return typeof v !== 'number' || !Number.isFinite(v) ? UNKNOWN : tri(cmp(v, bound));
    });
  }
  if (ops['equals_claim'] !== undefined) {
    const claim = String(ops['equals_claim']);
    tests.push((f) => {
      const v = read(f);
      const claims = f.trusted.claims;
      const c = claims && Object.hasOwn(claims, claim) ? claims[claim] : undefined;
      // Only a scalar claim can be compared: a null (no such user) or structured claim is unevaluable.
      if (v === undefined || !isScalarClaim(c) || typeOf(v) !== typeOf(c)) return UNKNOWN;
      return tri(v === c);
    });
  }
  return all(tests);
}

/** One test for all conditions of a rule (ANDed), plus the list of fields it reads. */
export function compileConditions(
  conditions: Readonly<Record<string, Ops | undefined>> | undefined,
  effect: Effect,
): {
  test: FieldTest;
  fields: string[];
} {
  const tests: FieldTest[] = [];
  const fields: string[] = [];
  for (const [field, ops] of Object.entries(conditions ?? {})) {
    if (ops === undefined) continue;
    fields.push(field);
    if (field === 'path') tests.push(pathTest(ops));
    else if (field === 'command') tests.push(commandTest(ops));
    else if (field === 'url') tests.push(urlTest(ops));
    else if (field === 'host') tests.push(hostTest(ops));
    else if (field === 'method') tests.push(methodTest(ops));
    else if (field === 'address') tests.push(addressTest(ops, effect));
    else if (field === 'tool') tests.push(exactStringTest(ops, (a) => a.tool));
    else if (field === 'model') tests.push(exactStringTest(ops, (a) => a.model));
    else if (field.startsWith('args.')) tests.push(argTest(field, ops));
    else throw new Error(`unknown condition field ${field}`);
  }
  return { test: tests.length === 0 ? () => YES : all(tests), fields };
}
