// Properties of the normalisers and the evaluator (fast-check), each checked against an independent reference where
// one exists: node:path for paths, the WHATWG URL API for URLs, regular expressions for host globs, /bin/sh for the
// lexer, and a spec-level evaluator written from the policy language's rules (not from the engine's code) for tools,
// models and files.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { posix } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { stringify } from 'yaml';
import { lexCommand } from '../../../sidecar/policy/normalize/argv.ts';
import { compileHostGlob } from '../../../sidecar/policy/normalize/host.ts';
import { normalizePath, segmentsStartWith } from '../../../sidecar/policy/normalize/path.ts';
import { normalizeUrl } from '../../../sidecar/policy/normalize/url.ts';
import { compilePolicy, type Policy, type TrustedContext } from '../../../sidecar/policy/policy.ts';
import { type Decision, EFFECTS } from '../../../sidecar/policy/types.ts';

// PROPERTY_RUNS=20000 for a long soak; the default keeps the unit suite quick.
const RUNS = { numRuns: Number(process.env['PROPERTY_RUNS'] ?? 400) };

// ---------------------------------------------------------------------------------------------------------------
// Paths

const pathSegment = fc.constantFrom(
  'a',
  'data',
  'research',
  'research-evil',
  'secrets',
  '..',
  '.',
  '',
  '...',
  '%2e%2e',
  'x y',
  'é',
  '\\',
);
const absolutePath = fc.array(pathSegment, { maxLength: 7 }).map((s) => `/${s.join('/')}`);
const anyPath = fc.oneof(
  absolutePath,
  absolutePath.map((p) => p.slice(1)),
  fc.string(),
  fc.constant('/a\0b'),
);

describe('normalizePath', () => {
  it('never throws, whatever it is given', () => {
    fc.assert(
      fc.property(fc.oneof(anyPath, fc.anything()), (raw) => {
        normalizePath(raw);
      }),
      RUNS,
    );
  });

  it('agrees with node:path posix.resolve on absolute paths and refuses everything else', () => {
    fc.assert(
      fc.property(anyPath, (raw) => {
        const n = normalizePath(raw);
        const absolute = raw.startsWith('/') && !raw.includes('\0');
        expect(n.ok).toBe(absolute);
        if (n.ok) expect(n.path).toBe(posix.resolve(raw));
      }),
      RUNS,
    );
  });

  it('is idempotent', () => {
    fc.assert(
      fc.property(anyPath, (raw) => {
        const n = normalizePath(raw);
        if (!n.ok) return;
        const again = normalizePath(n.path);
        expect(again).toEqual(n);
      }),
      RUNS,
    );
  });

  it('a path under a prefix really has the prefix as its leading segments, and nothing else is under it', () => {
    fc.assert(
      fc.property(absolutePath, absolutePath, (rawPath, rawPrefix) => {
        const p = normalizePath(rawPath);
        const pre = normalizePath(rawPrefix);
        if (!p.ok || !pre.ok) throw new Error('absolute paths normalise');
        const under = segmentsStartWith(p.segments, pre.segments);
        // Independent: string comparison on a separator boundary.
        const byString = pre.path === '/' || p.path === pre.path || p.path.startsWith(`${pre.path}/`);
        expect(under).toBe(byString);
        if (under) expect(p.path.split('/').slice(1, pre.segments.length + 1)).toEqual([...pre.segments]);
      }),
      RUNS,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// URLs

const urlScheme = fc.constantFrom('http', 'https', 'HTTPS', 'ftp', 'ws', 'file');
const hostLabel = fc.constantFrom(
  'api',
  'example',
  'com',
  'x',
  'API',
  'bücher',
  'xn--bcher-kva',
  'а',
  '1',
  '0x7f',
  '',
);
const urlHost = fc.oneof(
  fc
    .tuple(fc.array(hostLabel, { minLength: 1, maxLength: 4 }), fc.constantFrom('', '.', '..'))
    .map(([labels, dots]) => labels.join('.') + dots),
  // IPv6, IPv4-mapped in three spellings, and the IPv4-translated form, which is not mapped.
  fc.constantFrom(
    '[::1]',
    '[::ffff:127.0.0.1]',
    '[::FFFF:a9fe:a9fe]',
    '[0:0:0:0:0:ffff:cb00:7107]',
    '[::ffff:0:7f00:1]',
  ),
);
const urlSegment = fc.constantFrom(
  'v1',
  'admin',
  '..',
  '.',
  '%2e%2e',
  '%2E.',
  '%2f',
  '%5C',
  '%00',
  '%41',
  '%7e',
  'a%20b',
  'é',
  '',
  ';x',
  '..;x',
  '.;',
  '%2e%2e;',
  'a..;',
  '%252e',
  '%',
  ' ',
  '\\',
);
const urlTail = fc.constantFrom('', '', '?q=1', '?', '#f', '?a#b', '#?x', '?%6Fp=%2f&%7E');
const generatedUrl = fc
  .record({
    scheme: urlScheme,
    user: fc.constantFrom('', '', '', 'u@', 'u:p@', '@'),
    host: urlHost,
    port: fc.constantFrom('', '', ':80', ':443', ':0443', ':8080', ':', ':65536'),
    segments: fc.array(urlSegment, { maxLength: 5 }),
    tail: urlTail,
  })
  .map((u) => `${u.scheme}://${u.user}${u.host}${u.port}/${u.segments.join('/')}${u.tail}`);
const anyUrl = fc.oneof(
  generatedUrl,
  fc.webUrl({ withQueryParameters: true, withFragments: true }),
  fc.string(),
);

/** WHATWG writes an IPv4-mapped IPv6 host as `[::ffff:hhhh:hhhh]`; policy compares it as that IPv4 address. */
function asPolicyHost(hostname: string): string {
  const m = /^\[::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})\]$/.exec(hostname);
  if (!m) return hostname;
  const [hi, lo] = [Number.parseInt(m[1] as string, 16), Number.parseInt(m[2] as string, 16)];
  return [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.');
}

describe('normalizeUrl', () => {
  it('never throws', () => {
    fc.assert(
      fc.property(fc.oneof(anyUrl, fc.anything()), (raw) => {
        normalizeUrl(raw);
      }),
      RUNS,
    );
  });

  it('the canonical form re-parses to itself', () => {
    fc.assert(
      fc.property(anyUrl, (raw) => {
        const n = normalizeUrl(raw);
        if (!n.ok) return;
        const again = normalizeUrl(n.url.canonical);
        expect(again.ok && again.url).toEqual(n.url);
      }),
      RUNS,
    );
  });

  it('what it accepts, the WHATWG parser sees the same way: http(s), no userinfo, same host and port', () => {
    fc.assert(
      fc.property(anyUrl, (raw) => {
        const n = normalizeUrl(raw);
        if (!n.ok) return;
        const w = new URL(raw);
        expect(['http:', 'https:']).toContain(w.protocol);
        expect(w.username + w.password).toBe('');
        expect(asPolicyHost(w.hostname.replace(/\.$/, ''))).toBe(n.url.host);
        expect(n.url.port).toBe(w.port === '' ? (w.protocol === 'https:' ? 443 : 80) : Number(w.port));
        expect(raw).not.toMatch(/[\\\s\u0000-\u001f\u007f]/);
        for (const s of n.url.segments) {
          // `..;x` too: servers that drop `;parameters` before resolving dot segments read it as `..`.
          expect(s).not.toBe('');
          expect(['.', '..']).not.toContain(s.split(';')[0]);
          expect(s).not.toMatch(/%(2f|5c|00)/i);
        }
      }),
      RUNS,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Host globs

const globLabel = fc.constantFrom('*', '**', 'a', 'b', 'example', '10', '0', '255');
const hostLabelForGlob = fc.constantFrom('a', 'b', 'example', '10', 'c', '0', '255');

/** Reference: `*` is one label, `**` one or more, as a regular expression over the dotted host. */
function globRegExp(pattern: string): RegExp {
  const parts = pattern.split('.').map((l) => (l === '*' ? '[^.]+' : l === '**' ? '[^.]+(?:\\.[^.]+)*' : l));
  return new RegExp(`^${parts.join('\\.')}$`);
}

/** A glob whose literal labels are all numbers is an IPv4 glob: it matches IPv4 addresses only (node:net's view). */
const isIpv4Glob = (pattern: string) => {
  const literals = pattern.split('.').filter((l) => l !== '*' && l !== '**');
  return literals.length > 0 && literals.every((l) => /^[0-9]+$/.test(l));
};

describe('compileHostGlob', () => {
  it('agrees with a regular-expression reference, IPv4 globs matching IPv4 hosts only', () => {
    fc.assert(
      fc.property(
        fc.array(globLabel, { minLength: 1, maxLength: 6 }).map((l) => l.join('.')),
        fc.array(hostLabelForGlob, { minLength: 1, maxLength: 9 }).map((l) => l.join('.')),
        (pattern, host) => {
          const want = globRegExp(pattern).test(host) && (!isIpv4Glob(pattern) || isIP(host) === 4);
          const m = compileHostGlob(pattern);
          // Refused at load: only an IPv4 glob that no dotted quad fits (`10`, `10.*`, `*.*.*.*.10`).
          if (m === undefined) expect([isIpv4Glob(pattern), want]).toEqual([true, false]);
          else expect(m(host)).toBe(want);
        },
      ),
      RUNS,
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// The command lexer

const shellChar = fc.constantFrom(
  ...'abc xyz-_=./:,@%+'.split(''),
  ...`'"\\`.split(''),
  ...'\t;&|<>$`(){}[]*?~#!\n'.split(''),
  'é',
);
const shellish = fc.string({ unit: shellChar, maxLength: 24 });
const quoteWord = (w: string) => `'${w.replaceAll("'", `'\\''`)}'`;

describe('lexCommand', () => {
  it('never throws', () => {
    fc.assert(
      fc.property(fc.oneof(shellish, fc.string({ unit: 'binary' })), (cmd) => {
        lexCommand(cmd);
      }),
      RUNS,
    );
  });

  it('quoting every token with single quotes and lexing again gives the same argv', () => {
    fc.assert(
      fc.property(shellish, (cmd) => {
        const r = lexCommand(cmd);
        if (!r.ok) return;
        const again = lexCommand(r.argv.map(quoteWord).join(' '));
        expect(again.ok && again.argv).toEqual(r.argv);
      }),
      RUNS,
    );
  });

  it('plain words joined by spaces lex back to themselves', () => {
    const word = fc.string({
      unit: fc.constantFrom(...'abcxyz0123456789-_./:,@%+'.split('')),
      minLength: 1,
      maxLength: 8,
    });
    fc.assert(
      fc.property(fc.array(word, { minLength: 1, maxLength: 6 }), (words) => {
        const r = lexCommand(words.join(' '));
        expect(r.ok && r.argv).toEqual(words);
      }),
      RUNS,
    );
  });

  // The accepted language has no expansions or operators, so printf sees exactly the words the lexer produced.
  it.skipIf(!existsSync('/bin/sh'))('agrees with /bin/sh on every command it accepts', () => {
    fc.assert(
      fc.property(shellish, (cmd) => {
        const r = lexCommand(cmd);
        if (!r.ok) return;
        const out = execFileSync('/bin/sh', ['-c', `printf '%s\\0' ${cmd}`], { encoding: 'utf8' });
        expect(out.split('\0').slice(0, -1)).toEqual(r.argv);
      }),
      { numRuns: 150 },
    );
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Random policies

const EFFECT = fc.constantFrom(...EFFECTS);
const TOOLS = ['a', 'b', 'search', 'refund', 'A', 'a ', 'constructor'];
const MODELS = ['claude-haiku-4-5', 'claude-sonnet-4-5', 'gpt-4o', 'Claude-haiku-4-5', ''];
const PATHS = [
  '/',
  '/data',
  '/data/',
  '/data/research',
  '//data/./research',
  '/data/research/secrets',
  '/data/research-evil',
  '/etc/passwd',
];
const URL_PREFIXES = [
  'https://api.example.com',
  'https://api.example.com/v1',
  'http://api.example.com/',
  'https://other.example.com:8443/x',
];
const URLS = [
  'https://api.example.com/v1/q?x=1',
  'https://api.example.com/',
  'https://other.example.com:8443/x',
];
const COMMANDS = ['npm test', 'npm', 'git status', "echo 'a b'", 'rm -rf /'];
const SCALARS = [0, 1, 5, 100, -1, 1.5, 'x', 'ab', '', '5', true, false, null] as const;
const NUMBERS = [-1, 0, 1, 5, 100, 1.5];
const nonEmpty = <T extends object>(o: T) => Object.keys(o).length > 0;
const someOf = <T>(pool: readonly T[]) =>
  fc.uniqueArray(fc.constantFrom(...pool), { minLength: 1, maxLength: 3 });
const ops = <T>(model: { [K in keyof T]: fc.Arbitrary<T[K]> }) =>
  fc.record(model, { requiredKeys: [], noNullPrototype: true }).filter(nonEmpty);

const argOps = ops({
  equals: fc.constantFrom(...SCALARS),
  in: someOf(SCALARS),
  starts_with: fc.constantFrom('a', 'x', ''),
  gt: fc.constantFrom(...NUMBERS),
  gte: fc.constantFrom(...NUMBERS),
  lt: fc.constantFrom(...NUMBERS),
  lte: fc.constantFrom(...NUMBERS),
  equals_claim: fc.constantFrom('sub', 'n', 'constructor'),
});
const toolRule = fc.record(
  {
    action: fc.constant('tool_call'),
    effect: EFFECT,
    conditions: fc.record(
      {
        tool: ops({ equals: fc.constantFrom(...TOOLS), in: someOf(TOOLS) }),
        'args.n': argOps,
        'args.s': argOps,
        'args.o.k': argOps,
        'args.constructor': argOps,
      },
      { requiredKeys: [], noNullPrototype: true },
    ),
  },
  { requiredKeys: ['action', 'effect'], noNullPrototype: true },
);
const modelRule = fc.record(
  {
    action: fc.constant('model'),
    effect: EFFECT,
    conditions: fc.record(
      {
        model: ops({
          equals: fc.constantFrom(...MODELS),
          in: someOf(MODELS),
          starts_with: fc.constantFrom('claude-', 'gpt', 'c'),
        }),
      },
      { noNullPrototype: true },
    ),
  },
  { requiredKeys: ['action', 'effect'], noNullPrototype: true },
);
const fileRule = fc.record(
  {
    action: fc.constantFrom('file_read', 'file_write'),
    effect: EFFECT,
    conditions: fc.record(
      {
        path: ops({
          equals: fc.constantFrom(...PATHS),
          starts_with: fc.constantFrom(...PATHS),
          in: someOf(PATHS),
        }),
      },
      { noNullPrototype: true },
    ),
  },
  { requiredKeys: ['action', 'effect'], noNullPrototype: true },
);
const networkRule = fc.record(
  {
    action: fc.constant('network'),
    effect: EFFECT,
    conditions: fc.record(
      {
        url: ops({
          starts_with: fc.constantFrom(...URL_PREFIXES),
          equals: fc.constantFrom(...URLS),
          in: someOf(URLS),
        }),
        host: ops({
          equals: fc.constantFrom('api.example.com', 'other.example.com'),
          glob: fc.constantFrom('*.example.com', '**.com'),
        }),
        method: ops({ equals: fc.constantFrom('GET', 'post'), in: someOf(['GET', 'HEAD', 'CONNECT']) }),
        address: ops({ in_cidr: someOf(['10.0.0.0/8', '93.184.216.0/24', 'fd00::/8']) }),
      },
      { requiredKeys: [], noNullPrototype: true },
    ),
  },
  { requiredKeys: ['action', 'effect'], noNullPrototype: true },
);
const shellRule = fc.record(
  {
    action: fc.constant('shell_exec'),
    effect: EFFECT,
    conditions: fc.record(
      {
        command: ops({
          equals: fc.constantFrom(...COMMANDS),
          starts_with: fc.constantFrom(...COMMANDS),
          in: someOf(COMMANDS),
        }),
      },
      { noNullPrototype: true },
    ),
  },
  { requiredKeys: ['action', 'effect'], noNullPrototype: true },
);

type RuleDoc = { action: string; effect: string; conditions?: Record<string, Record<string, unknown>> };
interface Generated {
  readonly text: string;
  readonly rules: readonly (RuleDoc & { name: string })[];
  readonly policy: Policy;
}

function build(rules: readonly RuleDoc[]): Generated {
  const named = rules.map((r, i) => ({ name: `r${i}`, ...r }));
  const text = stringify({ agent: 'prop', rules: named });
  const compiled = compilePolicy(text, 'generated.yaml');
  if (!compiled.ok)
    throw new Error(
      `generated policy rejected:\n${compiled.diagnostics.map((d) => d.message).join('\n')}\n${text}`,
    );
  return { text, rules: named, policy: compiled.policy };
}
const policyArb = fc
  .array(fc.oneof(toolRule, modelRule, fileRule, networkRule, shellRule), { maxLength: 8 })
  .map((rules) => build(rules as RuleDoc[]));
// Denser in the action types the reference covers, so most actions meet several rules.
const referencePolicyArb = fc
  .array(fc.oneof(toolRule, modelRule, fileRule), { minLength: 1, maxLength: 10 })
  .map((rules) => build(rules as RuleDoc[]));

// Actions: mostly well-formed, drawn from the same pools so rules actually match.
const argValue = fc.oneof(fc.constantFrom(...SCALARS), fc.constant([1]), fc.constant({}));
const argsArb = fc.record(
  {
    n: argValue,
    s: argValue,
    o: fc.oneof(fc.record({ k: argValue }, { requiredKeys: [] }), argValue),
    constructor: argValue,
  },
  { requiredKeys: [] },
);
const agentArb = fc.constantFrom('prop', 'prop', 'prop', 'prop', 'prop', 'prop', 'Prop', 'other');
const toolAction = fc.record(
  { type: fc.constant('tool_call'), tool: fc.constantFrom(...TOOLS, 'z'), args: argsArb, agent: agentArb },
  { requiredKeys: ['type'] },
);
const modelAction = fc.record(
  { type: fc.constant('model'), model: fc.constantFrom(...MODELS, 'claude-opus'), agent: agentArb },
  { requiredKeys: ['type'] },
);
const fileAction = fc.record(
  {
    type: fc.constantFrom('file_read', 'file_write'),
    path: fc.oneof(fc.constantFrom(...PATHS), anyPath),
    agent: agentArb,
  },
  { requiredKeys: ['type'] },
);
const networkAction = fc.record(
  {
    type: fc.constant('network'),
    url: fc.oneof(fc.constantFrom(...URLS, ...URL_PREFIXES), generatedUrl),
    method: fc.constantFrom('GET', 'get', 'POST', 'CONNECT', 'HEAD', 'poſt'),
    host: fc.constantFrom('api.example.com', 'evil.com'),
    agent: agentArb,
  },
  { requiredKeys: ['type'] },
);
const shellAction = fc.oneof(
  fc.record(
    { type: fc.constant('shell_exec'), command: fc.oneof(fc.constantFrom(...COMMANDS), shellish) },
    { requiredKeys: ['type'] },
  ),
  fc.record({
    type: fc.constant('shell_exec'),
    argv: fc.array(fc.constantFrom('npm', 'test', 'git', 'status', ';'), { minLength: 1, maxLength: 3 }),
  }),
);
const wellFormed = fc.oneof(toolAction, modelAction, fileAction, networkAction, shellAction);
const anyInput = fc.oneof(wellFormed, fc.jsonValue(), fc.anything());
const trustedArb: fc.Arbitrary<TrustedContext> = fc.record(
  {
    claims: fc.record({ sub: argValue, n: argValue }, { requiredKeys: [] }),
    addresses: fc.array(
      fc.constantFrom('10.1.2.3', '93.184.216.34', '::ffff:10.0.0.1', 'fd00::1', '169.254.169.254', 'x'),
      { maxLength: 3 },
    ),
  },
  { requiredKeys: [] },
);

describe('evaluate on random policies', () => {
  it('generated policies compile, and compiling arbitrary YAML-able documents never throws', () => {
    fc.assert(
      fc.property(policyArb, fc.jsonValue(), (g, junk) => {
        expect(g.policy.rules.length).toBe(g.rules.length);
        expect(() => compilePolicy(stringify({ agent: 'prop', rules: junk }), 'junk.yaml')).not.toThrow();
      }),
      { numRuns: 200 },
    );
  });

  it('never throws on arbitrary input and always returns a well-formed decision', () => {
    fc.assert(
      fc.property(policyArb, anyInput, trustedArb, (g, input, trusted) => {
        const d = g.policy.evaluate(input, trusted);
        expect(EFFECTS).toContain(d.effect);
        expect(typeof d.reason).toBe('string');
        expect(d.reason).not.toBe('internal_error');
        if (d.rule !== null) {
          const rule = g.rules.find((r) => r.name === d.rule);
          expect(rule?.effect).toBe(d.effect);
          expect(rule?.action).toBe((input as { type?: unknown }).type);
        }
      }),
      RUNS,
    );
  });

  it('is deterministic, and a second compile of the same text decides the same', () => {
    fc.assert(
      fc.property(policyArb, anyInput, trustedArb, (g, input, trusted) => {
        const first = g.policy.evaluate(input, trusted);
        expect(g.policy.evaluate(input, trusted)).toEqual(first);
        const again = compilePolicy(g.text, 'again.yaml');
        expect(again.ok && again.policy.evaluate(input, trusted)).toEqual(first);
      }),
      RUNS,
    );
  });

  it('never allows an action when only other action types have ALLOW rules', () => {
    fc.assert(
      fc.property(policyArb, wellFormed, trustedArb, (g, action, trusted) => {
        const type = (action as { type: string }).type;
        fc.pre(!g.rules.some((r) => r.effect === 'ALLOW' && r.action === type));
        expect(g.policy.evaluate(action, trusted).effect).not.toBe('ALLOW');
      }),
      RUNS,
    );
  });

  it('matches the spec-level reference evaluator for tools, models and files', () => {
    fc.assert(
      fc.property(
        referencePolicyArb,
        fc.oneof(toolAction, modelAction, fileAction),
        trustedArb,
        (g, action, trusted) => {
          expect(g.policy.evaluate(action, trusted)).toEqual(referenceEvaluate(g.rules, action, trusted));
        },
      ),
      { numRuns: RUNS.numRuns * 3 },
    );
  });

  it('a network ALLOW by a url prefix is one the WHATWG parser agrees with', () => {
    fc.assert(
      fc.property(policyArb, networkAction, trustedArb, (g, action, trusted) => {
        const d = g.policy.evaluate(action, trusted);
        const prefix = g.rules.find((r) => r.name === d.rule)?.conditions?.['url']?.['starts_with'];
        if (d.effect !== 'ALLOW' || typeof prefix !== 'string') return;
        const u = new URL(action.url as string);
        const p = new URL(prefix);
        expect([u.protocol, u.hostname.replace(/\.$/, ''), u.port, u.username, u.password]).toEqual([
          p.protocol,
          p.hostname,
          p.port,
          '',
          '',
        ]);
        const segs = (x: URL) => x.pathname.split('/').filter((s) => s !== '');
        if (action.method?.toUpperCase() === 'CONNECT') expect(segs(p)).toEqual([]);
        else
          expect(segs(u).slice(0, segs(p).length).map(decodeUnreserved)).toEqual(
            segs(p).map(decodeUnreserved),
          );
      }),
      RUNS,
    );
  });

  it('a tool hidden by mayExposeTool is never allowed nor sent to approval, whatever its arguments', () => {
    fc.assert(
      fc.property(policyArb, toolAction, trustedArb, (g, action, trusted) => {
        fc.pre(action.tool !== undefined && !g.policy.mayExposeTool(action.tool));
        expect(g.policy.evaluate({ ...action, agent: 'prop' }, trusted).effect).toBe('DENY');
      }),
      RUNS,
    );
  });
});

const decodeUnreserved = (s: string) =>
  s.replace(/%([0-9a-f]{2})/gi, (m, h: string) => {
    const c = String.fromCharCode(Number.parseInt(h, 16));
    return /^[A-Za-z0-9\-._~]$/.test(c) ? c : m.toUpperCase();
  });

// ---------------------------------------------------------------------------------------------------------------
// The reference: the policy language's rules for tool_call, model, file_read and file_write, restated plainly.

type Tri = 'yes' | 'no' | 'unknown';
const and = (parts: readonly Tri[]): Tri =>
  parts.includes('no') ? 'no' : parts.includes('unknown') ? 'unknown' : 'yes';
const kind = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);

function referenceEvaluate(
  rules: Generated['rules'],
  action: Record<string, unknown>,
  trusted: TrustedContext,
): Decision {
  if (action['agent'] !== undefined && action['agent'] !== 'prop')
    return { effect: 'DENY', rule: null, reason: 'identity_mismatch' };
  for (const rule of rules) {
    if (rule.action !== action['type']) continue;
    const parts = Object.entries(rule.conditions ?? {}).map(([field, o]) =>
      referenceField(field, o, action, trusted),
    );
    const r = and(parts);
    if (r === 'yes') return { effect: rule.effect as Decision['effect'], rule: rule.name, reason: 'matched' };
    if (r === 'unknown' && rule.effect !== 'ALLOW') {
      return { effect: rule.effect as Decision['effect'], rule: rule.name, reason: 'unevaluable_condition' };
    }
  }
  return { effect: 'DENY', rule: null, reason: 'no_rule_matched' };
}

function referenceField(
  field: string,
  o: Record<string, unknown>,
  action: Record<string, unknown>,
  trusted: TrustedContext,
): Tri {
  const parts: Tri[] = [];
  const cmp = (v: unknown, ok: (v: unknown) => boolean, test: (v: never) => boolean) =>
    parts.push(v === undefined || !ok(v) ? 'unknown' : test(v as never) ? 'yes' : 'no');
  if (field === 'tool' || field === 'model') {
    const v = action[field];
    const isString = (x: unknown) => typeof x === 'string';
    if ('equals' in o) cmp(v, isString, (x: string) => x === o['equals']);
    if ('in' in o) cmp(v, isString, (x: string) => (o['in'] as unknown[]).includes(x));
    if ('starts_with' in o) cmp(v, isString, (x: string) => x.startsWith(o['starts_with'] as string));
  } else if (field === 'path') {
    const raw = action['path'];
    const v =
      typeof raw === 'string' && raw.startsWith('/') && !raw.includes('\0') ? posix.resolve(raw) : undefined;
    const ok = () => true;
    if ('equals' in o) cmp(v, ok, (x: string) => x === posix.resolve(o['equals'] as string));
    if ('in' in o) cmp(v, ok, (x: string) => (o['in'] as string[]).some((w) => posix.resolve(w) === x));
    if ('starts_with' in o) {
      const pre = posix.resolve(o['starts_with'] as string);
      cmp(v, ok, (x: string) => pre === '/' || x === pre || x.startsWith(`${pre}/`));
    }
  } else {
    // args.<dotted.key>: own keys only, never through prototype keys; strict types.
    let v: unknown = action['args'];
    for (const k of field.slice('args.'.length).split('.')) {
      const holder = v;
      v = undefined;
      if (['__proto__', 'constructor', 'prototype'].includes(k)) break;
      if (kind(holder) === 'object' && Object.hasOwn(holder as object, k))
        v = (holder as Record<string, unknown>)[k];
    }
    const want = o['equals'];
    if ('equals' in o)
      cmp(
        v,
        (x) => kind(x) === kind(want),
        (x) => x === want,
      );
    if ('in' in o) {
      // `equals` against each entry, OR-ed: yes beats unknown (another type) beats no.
      const each = (o['in'] as unknown[]).map(
        (w): Tri => (v === undefined || kind(v) !== kind(w) ? 'unknown' : v === w ? 'yes' : 'no'),
      );
      parts.push(each.includes('yes') ? 'yes' : each.includes('unknown') ? 'unknown' : 'no');
    }
    const isNumber = (x: unknown) => typeof x === 'number';
    if ('starts_with' in o)
      cmp(
        v,
        (x) => typeof x === 'string',
        (x: string) => x.startsWith(o['starts_with'] as string),
      );
    if ('gt' in o) cmp(v, isNumber, (x: number) => x > (o['gt'] as number));
    if ('gte' in o) cmp(v, isNumber, (x: number) => x >= (o['gte'] as number));
    if ('lt' in o) cmp(v, isNumber, (x: number) => x < (o['lt'] as number));
    if ('lte' in o) cmp(v, isNumber, (x: number) => x <= (o['lte'] as number));
    if ('equals_claim' in o) {
      const claims = trusted.claims ?? {};
      const name = o['equals_claim'] as string;
      const c = Object.hasOwn(claims, name) ? claims[name] : undefined;
      const scalar = ['string', 'number', 'boolean'].includes(kind(c));
      cmp(
        v,
        (x) => scalar && kind(x) === kind(c),
        (x) => x === c,
      );
    }
  }
  return and(parts);
}
