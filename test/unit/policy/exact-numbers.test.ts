// A number in a policy (or config, or policy test) file is judged as written, or the file is refused at that number.
// The yaml package silently read 9007199254740993 as ...992 and 1e999 as Infinity, so a rule pinned to one account
// id matched another, while the evaluate API and the MCP gateway already refused such numbers in requests
// (evaluate-exact-numbers.test.ts). "Exact" is one test for both sides (sidecar/policy/exact-number.ts): the number
// must read back as the decimal written, so 0.1 and 9007199254740992 load and 9007199254740993 does not.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadSidecarConfigFile } from '../../../sidecar/config-file.ts';
import { formatDiagnostic, parseYamlWithSchema } from '../../../sidecar/policy/load.ts';
import { compilePolicy } from '../../../sidecar/policy/policy.ts';
import { policyTestSchema } from '../../../sidecar/policy/policy-tests.ts';

const diagnostics = (text: string): string[] => {
  const r = compilePolicy(text, 'p.yaml');
  return r.ok ? [] : r.diagnostics.map(formatDiagnostic);
};

/** A tool_call rule whose condition on `args.x` is `ops`, on line 4 of the policy; `ops` starts at column 15. */
const condition = (ops: string) =>
  `agent: a\nrules:\n  - name: r\n    conditions: { args.x: ${ops} }\n    action: tool_call\n    effect: ALLOW\n`;
const budget = (fields: string) => `agent: a\nrules: []\nbudgets:\n  - { name: b, period: day, ${fields} }\n`;

const INTEGERS = 'integers are exact within ±9007199254740991';
const DIGITS = 'up to 15 significant digits are always kept';
const FINITE = 'numbers must be finite, as in JSON';
const inexact = (at: string, written: string, read: string, hint = INTEGERS) =>
  `p.yaml:${at}: ${written} cannot be represented exactly: it would be read as ${read} (${hint})`;
// What the schema says as well about a non-finite value where a number or scalar is expected.
const schemaInvalid = (at: string, path: string) =>
  `p.yaml:${at}: rules[0].conditions["args.x"].${path}: Invalid input`;

describe('a number that would not be read as written is refused at its file:line:col', () => {
  it.for<[string, string, readonly string[]]>([
    [
      'an integer bound above 2^53',
      condition('{ lte: 9007199254740993 }'),
      [inexact('4:34', '9007199254740993', '9007199254740992')],
    ],
    [
      'a negative integer bound below -2^53',
      condition('{ gt: -9007199254740993 }'),
      [inexact('4:33', '-9007199254740993', '-9007199254740992')],
    ],
    [
      'an integer in an `in` list, after a good one',
      condition('{ in: [1, 9007199254740993] }'),
      [inexact('4:37', '9007199254740993', '9007199254740992')],
    ],
    [
      'an integer in a block list, nested in block maps',
      'agent: a\nrules:\n  - name: r\n    action: tool_call\n    conditions:\n      args.x:\n        in:\n          - 9007199254740993\n    effect: ALLOW\n',
      [inexact('8:13', '9007199254740993', '9007199254740992')],
    ],
    [
      'an equals of 20 digits (read as 1e20)',
      condition('{ equals: 99999999999999999999 }'),
      [inexact('4:37', '99999999999999999999', '100000000000000000000')],
    ],
    [
      'an equals of 21 digits (read as 1e+21)',
      condition('{ equals: 999999999999999999999 }'),
      [inexact('4:37', '999999999999999999999', '1e+21')],
    ],
    [
      'a budget max_tokens, which the schema also finds too big',
      budget('max_tokens: 99999999999999999999'),
      [
        inexact('4:41', '99999999999999999999', '100000000000000000000'),
        'p.yaml:4:41: budgets[0].max_tokens: Too big: expected int to be <=9007199254740991',
      ],
    ],
    [
      'a budget max_usd, which the schema alone would take',
      budget('max_usd: 9007199254740993'),
      [inexact('4:38', '9007199254740993', '9007199254740992')],
    ],
    [
      'hex and octal integers above 2^53',
      condition('{ in: [0x20000000000001, 0o400000000000000001] }'),
      [
        inexact('4:34', '0x20000000000001', '9007199254740992'),
        inexact('4:52', '0o400000000000000001', '9007199254740992'),
      ],
    ],
    [
      'an integer made one by an explicit !!int tag on a quoted string',
      condition('{ equals: !!int "9007199254740993" }'),
      [inexact('4:43', '9007199254740993', '9007199254740992')],
    ],
    [
      'a decimal with more digits than a double keeps',
      condition('{ gte: 100.0000000000000001 }'),
      [inexact('4:34', '100.0000000000000001', '100', DIGITS)],
    ],
    [
      'a decimal too small to be anything but 0',
      condition('{ gt: 1e-400 }'),
      [inexact('4:33', '1e-400', '0', 'it is too close to zero')],
    ],
    [
      'numbers that overflow to Infinity',
      condition('{ in: [1e999, -1e999] }'),
      [
        `p.yaml:4:34: 1e999 is out of range: it would be read as Infinity (${FINITE})`,
        schemaInvalid('4:34', 'in[0]'),
        `p.yaml:4:41: -1e999 is out of range: it would be read as -Infinity (${FINITE})`,
        schemaInvalid('4:41', 'in[1]'),
      ],
    ],
    [
      '.inf, -.Inf and .NaN',
      condition('{ in: [.inf, -.Inf, .NaN] }'),
      [
        `p.yaml:4:34: .inf is not allowed: ${FINITE}`,
        schemaInvalid('4:34', 'in[0]'),
        `p.yaml:4:40: -.Inf is not allowed: ${FINITE}`,
        schemaInvalid('4:40', 'in[1]'),
        `p.yaml:4:47: .NaN is not allowed: ${FINITE}`,
        schemaInvalid('4:47', 'in[2]'),
      ],
    ],
    [
      'a number used as a key (it would become the key "9007199254740992")',
      'agent: a\nrules: []\n9007199254740993: x\n',
      [
        // The schema's problem is placed at the document, as for any key that is not a string.
        'p.yaml:1:1: policy: unknown key "9007199254740992"',
        inexact('3:1', '9007199254740993', '9007199254740992'),
      ],
    ],
    [
      'an anchored number, once at the anchor however often it is used',
      'agent: a\nrules:\n  - name: r\n    action: tool_call\n    conditions: { args.x: { gt: &n 9007199254740993 }, args.y: { lt: *n } }\n    effect: ALLOW\n',
      [inexact('5:36', '9007199254740993', '9007199254740992')],
    ],
    [
      'every one of several, in order, with the schema problems between them',
      'agent: a\ndescription: 9007199254740993\nrules:\n  - name: r\n    action: tool_call\n    conditions: { args.x: { lt: 1e999 } }\n    effect: ALLOW\nbudgets:\n  - { name: b, period: day, max_usd: 18446744073709551617 }\n',
      [
        inexact('2:14', '9007199254740993', '9007199254740992'),
        'p.yaml:2:14: description: Invalid input: expected string, received number',
        `p.yaml:6:33: 1e999 is out of range: it would be read as Infinity (${FINITE})`,
        'p.yaml:6:33: rules[0].conditions["args.x"].lt: Invalid input: expected number, received Infinity',
        inexact('9:38', '18446744073709551617', '18446744073709552000'),
      ],
    ],
  ])('%s', ([, text, want]) => {
    expect(diagnostics(text)).toEqual(want);
  });
});

describe('a number that reads back as written loads, and is judged as written', () => {
  it.for<[string, number]>([
    ['0', 0],
    ['-0', -0],
    ['42', 42],
    ['+12', 12],
    ['012', 12],
    ['9007199254740991', 9007199254740991],
    ['-9007199254740991', -9007199254740991],
    // 2^53 is not a safe integer, but it is exactly the number written, so it may be named (and requested).
    ['9007199254740992', 9007199254740992],
    ['1e20', 1e20],
    ['0x1F', 31],
    ['0o17', 15],
    ['0x20000000000000', 2 ** 53],
    // Decimals are not binary fractions, but each reads back as the decimal written: prices and USD budgets.
    ['0.1', 0.1],
    ['1.5', 1.5],
    ['.5', 0.5],
    ['5.', 5],
    ['1.0', 1],
    ['0.30000000000000004', 0.1 + 0.2],
    ['1.7976931348623157e308', Number.MAX_VALUE],
    ['5e-324', Number.MIN_VALUE],
  ])('%s', ([literal, value]) => {
    const r = compilePolicy(condition(`{ equals: ${literal} }`), 'p.yaml');
    expect(r.ok ? [] : r.diagnostics.map(formatDiagnostic)).toEqual([]);
    if (!r.ok) return;
    expect(r.policy.evaluate({ type: 'tool_call', tool: 't', args: { x: value } }).effect).toBe('ALLOW');
  });

  it('a budget of 0.1 USD and 9007199254740991 tokens', () => {
    const r = compilePolicy(budget('max_usd: 0.1, max_tokens: 9007199254740991'), 'p.yaml');
    expect(r.ok ? [] : r.diagnostics.map(formatDiagnostic)).toEqual([]);
    expect(r.ok && r.policy.budgets).toEqual([
      { name: 'b', period: 'day', maxUsd: 0.1, maxTokens: 9007199254740991 },
    ]);
  });

  it('strings that look like numbers stay strings, whatever their size', () => {
    const r = compilePolicy(condition('{ equals: "9007199254740993" }'), 'p.yaml');
    expect(r.ok ? [] : r.diagnostics.map(formatDiagnostic)).toEqual([]);
    if (!r.ok) return;
    expect(r.policy.evaluate({ type: 'tool_call', tool: 't', args: { x: '9007199254740993' } }).effect).toBe(
      'ALLOW',
    );
  });
});

describe('the other files read by parseYamlWithSchema are held to it too', () => {
  it('a policy test case whose action carries an inexact number', () => {
    const text =
      'cases:\n  - note: n\n    action: { type: tool_call, tool: t, args: { x: 9007199254740993 } }\n    want: DENY\n';
    const r = parseYamlWithSchema(text, 't.yaml', policyTestSchema);
    expect(r.ok ? [] : r.diagnostics.map(formatDiagnostic)).toEqual([
      `t.yaml:3:52: 9007199254740993 cannot be represented exactly: it would be read as 9007199254740992 (${INTEGERS})`,
    ]);
  });

  it.for<[string, string, string | undefined]>([
    [
      'a price above 2^53 in the sidecar config file is refused',
      'input_per_mtok: 9007199254740993, output_per_mtok: 1',
      `5:25: 9007199254740993 cannot be represented exactly: it would be read as 9007199254740992 (${INTEGERS})`,
    ],
    [
      'a price of 0.1 in the sidecar config file loads',
      'input_per_mtok: 0.1, output_per_mtok: 1.5',
      undefined,
    ],
  ])('%s', async ([, price, want]) => {
    const dir = await mkdtemp(join(tmpdir(), 'exact-numbers-'));
    try {
      const file = join(dir, 'sidecar.yaml');
      await writeFile(file, `model:\n  tools_mode: strip\n  prices:\n    m:\n      { ${price} }\n`);
      const got = await loadSidecarConfigFile(file).then(
        (c) => c.model?.prices,
        (e: unknown) => (e as Error).message,
      );
      expect(got).toEqual(
        want === undefined ? { m: { input_per_mtok: 0.1, output_per_mtok: 1.5 } } : `${file}:${want}`,
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
