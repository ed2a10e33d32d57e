// The loader's diagnostics: every invalid fixture is rejected as a whole, with every problem as `file:line:col: message`.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { isSidecarError } from '../../../sidecar/errors.ts';
import { formatDiagnostic, parsePolicyText } from '../../../sidecar/policy/load.ts';
import { compilePolicy } from '../../../sidecar/policy/policy.ts';
import { loadPolicy, tryLoadPolicy } from '../../../sidecar/policy-file.ts';

const INVALID = fileURLToPath(new URL('../../fixtures/policy/invalid/', import.meta.url));
const VALID = fileURLToPath(new URL('../../fixtures/policy/valid/', import.meta.url));
const POLICIES = fileURLToPath(new URL('../../../policies/', import.meta.url));

const ONE_OF_ACTIONS = '(expected one of: file_read, file_write, shell_exec, network, tool_call, model)';
const ONE_OF_EFFECTS = 'Invalid option: expected one of "ALLOW"|"DENY"|"REQUIRE_APPROVAL"';
const ONE_OF_PERIODS = 'Invalid option: expected one of "second"|"minute"|"hour"|"day"';
const AGENT_CHARS = 'must be letters, digits, ".", "_" or "-", starting with a letter or digit';
const NO_OPERATOR = 'a condition needs at least one operator';
const BAD_COMMAND = 'must be a plain command: no shell operators, expansions or redirections';
const BAD_GLOB = 'must be a host glob with `*` or `**` as whole labels';
const BAD_IPV4_GLOB =
  'must fit an IPv4 address, since a glob of numeric labels matches IPv4 addresses only: four labels (fewer with `**`), numbers 0-255 without leading zeros; for address ranges use address.in_cidr';
const BAD_CIDR = 'must be an IP address or CIDR';
const BAD_PATH = 'must be an absolute POSIX path without NUL bytes';
const BAD_PREFIX = 'must be an http(s) URL without userinfo, query or fragment';
const BAD_URL = 'must be an http(s) URL without userinfo or fragment';
const EMPTY_LIST = 'must list at least one value';
const MERGE_KEY = 'merge key "<<" is not allowed: YAML 1.2 has no merge keys (write the keys out in full)';
const INEXACT = (written: string, read: string) =>
  `${written} cannot be represented exactly: it would be read as ${read} (integers are exact within ±9007199254740991)`;
const NOT_FINITE = 'numbers must be finite, as in JSON';

/** Fixture -> the complete list of `line:col: message` it must produce, in order. */
const EXPECTED: Record<string, readonly string[]> = {
  'bad-agent-name.yaml': [`1:8: agent: ${AGENT_CHARS}`],
  'byte-order-mark.yaml': [`1:8: agent: ${AGENT_CHARS}`],
  'conditions-typo.yaml': ['6:5: rules[0]: unknown key "conditons"'],
  'duplicate-rule-names.yaml': ['9:11: rules[2].name: duplicate rule name "same"'],
  'duplicate-yaml-keys.yaml': ['8:5: Map keys must be unique', '9:1: Map keys must be unique'],
  'empty-agent.yaml': ['1:8: agent: must not be empty', `1:8: agent: ${AGENT_CHARS}`],
  'empty-condition.yaml': [
    `6:13: rules[0].conditions.path: ${NO_OPERATOR}`,
    '10:16: rules[1].conditions: Invalid input: expected object, received null',
    '15:13: rules[2].conditions.model: Invalid input: expected object, received null',
  ],
  'empty-file.yaml': ['1:1: the document must be a mapping'],
  'empty-in.yaml': [
    `6:19: rules[0].conditions.tool.in: ${EMPTY_LIST}`,
    `11:27: rules[1].conditions.address.in_cidr: ${EMPTY_LIST}`,
    `12:21: rules[1].conditions.host.glob: ${EMPTY_LIST}`,
  ],
  'field-not-for-action.yaml': [
    '6:7: rules[0].conditions: condition field "url" does not apply to action file_read (allowed: path)',
    '11:7: rules[1].conditions: condition field "path" does not apply to action shell_exec (allowed: command)',
    '16:7: rules[2].conditions: condition field "tool" does not apply to action network (allowed: url, host, method, address)',
    '21:7: rules[3].conditions: condition field "toool" does not apply to action tool_call (allowed: tool, args.<dotted.key>)',
    '26:7: rules[4].conditions: condition field "host" does not apply to action model (allowed: model)',
  ],
  'inexact-numbers.yaml': [
    `7:27: ${INEXACT('9007199254740993', '9007199254740992')}`,
    `7:49: ${INEXACT('-9007199254740993', '-9007199254740992')}`,
    `8:26: ${INEXACT('9007199254740993', '9007199254740992')}`,
    `8:44: ${INEXACT('0x20000000000001', '9007199254740992')}`,
    `9:27: ${INEXACT('99999999999999999999', '100000000000000000000')}`,
    `17:13: 1e999 is out of range: it would be read as Infinity (${NOT_FINITE})`,
    '17:13: rules[1].conditions["args.n"].in[1]: Invalid input',
    `18:13: .inf is not allowed: ${NOT_FINITE}`,
    '18:13: rules[1].conditions["args.n"].in[2]: Invalid input',
    '19:13: 100.0000000000000001 cannot be represented exactly: it would be read as 100 (up to 15 significant digits are always kept)',
    `24:17: ${INEXACT('99999999999999999999', '100000000000000000000')}`,
    '24:17: budgets[0].max_tokens: Too big: expected int to be <=9007199254740991',
  ],
  'invalid-values.yaml': [
    `6:28: rules[0].conditions.path.starts_with: ${BAD_PATH}`,
    `11:23: rules[1].conditions.path.equals: ${BAD_PATH}`,
    `16:27: rules[2].conditions.url.starts_with: ${BAD_PREFIX}`,
    `21:27: rules[3].conditions.url.starts_with: ${BAD_PREFIX}`,
    `26:22: rules[4].conditions.url.equals: ${BAD_URL}`,
    `31:19: rules[5].conditions.url.in[0]: ${BAD_URL}`,
    '36:22: rules[6].conditions.url.equals: Invalid URL',
    `41:31: rules[7].conditions.command.starts_with: ${BAD_COMMAND}`,
    '46:23: rules[8].conditions.host.equals: must be a valid host name',
    `51:21: rules[9].conditions.host.glob: ${BAD_GLOB}`,
    `56:28: rules[10].conditions.address.in_cidr[0]: ${BAD_CIDR} (prefix length must be 0..32: 10.0.0.0/33)`,
    `56:41: rules[10].conditions.address.in_cidr[1]: ${BAD_CIDR} (prefix length must be 0..128: ::/129)`,
    `56:51: rules[10].conditions.address.in_cidr[2]: ${BAD_CIDR} (not an IP address: not-an-ip)`,
    '61:25: rules[11].conditions.method.equals: must be an HTTP method',
    '66:29: rules[12].conditions.model.starts_with: Too small: expected string to have >=1 characters',
    '71:37: rules[13].conditions["args.user_id"].equals_claim: must be a claim name',
    '76:7: rules[14].conditions: condition field "args..x" does not apply to action tool_call (allowed: tool, args.<dotted.key>)',
    '81:11: rules[16].name: must not be empty',
    `87:28: rules[17].conditions.address.in_cidr[0]: ${BAD_CIDR} (host bits set in 10.0.0.1/8 (the network is 10.0.0.0/8))`,
    `87:40: rules[17].conditions.address.in_cidr[1]: ${BAD_CIDR} (zone ids are not allowed in a CIDR: fe80::%eth0/10)`,
    `87:58: rules[17].conditions.address.in_cidr[2]: ${BAD_CIDR} (prefix length must be 0..32: 10.0.0.0/08)`,
  ],
  'merge-key.yaml': [
    '3:1: policy: unknown key "base"',
    `7:5: rules[0].action: is required ${ONE_OF_ACTIONS}`,
    `8:5: ${MERGE_KEY}`,
  ],
  'merge-tag.yaml': [`8:13: ${MERGE_KEY}`, `8:13: rules[1].action: is required ${ONE_OF_ACTIONS}`],
  'missing-action.yaml': [
    `3:5: rules[0].action: is required ${ONE_OF_ACTIONS}`,
    '7:5: rules[1].effect: is required',
    '9:5: rules[2].name: is required',
  ],
  'missing-agent.yaml': ['1:1: agent: is required'],
  'not-a-mapping.yaml': ['1:1: the document must be a mapping'],
  'rate-limit.yaml': [
    '6:24: rules[0].rate_limit.max: Too small: expected number to be >0',
    '10:24: rules[1].rate_limit.max: Invalid input: expected int, received number',
    `14:32: rules[2].rate_limit.per: ${ONE_OF_PERIODS}`,
    '18:37: rules[3].rate_limit: unknown key "burst"',
  ],
  'rules-missing.yaml': ['1:1: rules: is required'],
  'rules-not-a-list.yaml': ['3:3: rules: Invalid input: expected array, received object'],
  'several-problems.yaml': [
    `2:8: agent: ${AGENT_CHARS}`,
    '6:5: rules[0]: unknown key "conditons"',
    `12:31: rules[1].conditions.command.starts_with: ${BAD_COMMAND}`,
    `13:13: rules[1].effect: ${ONE_OF_EFFECTS}`,
    '14:11: rules[2].name: duplicate rule name "r1"',
    `15:13: rules[2].action: unknown action "teleport" ${ONE_OF_ACTIONS}`,
    `20:21: rules[3].conditions.host.glob: ${BAD_GLOB}`,
    `21:27: rules[3].conditions.address.in_cidr: ${EMPTY_LIST}`,
    '23:24: rules[3].rate_limit.max: Too small: expected number to be >0',
    `23:33: rules[3].rate_limit.per: ${ONE_OF_PERIODS}`,
  ],
  'unknown-action.yaml': [`4:13: rules[0].action: unknown action "file_delete" ${ONE_OF_ACTIONS}`],
  'unknown-effect.yaml': [
    `5:13: rules[0].effect: ${ONE_OF_EFFECTS}`,
    `8:13: rules[1].effect: ${ONE_OF_EFFECTS}`,
  ],
  'unknown-operator.yaml': [
    `6:13: rules[0].conditions.path: ${NO_OPERATOR}`,
    '6:15: rules[0].conditions.path: unknown operator "startswith"',
    `11:13: rules[1].conditions.tool: ${NO_OPERATOR}`,
    '11:15: rules[1].conditions.tool: unknown operator "matches"',
    `16:23: rules[2].conditions["args.user.name"]: ${NO_OPERATOR}`,
    '16:25: rules[2].conditions["args.user.name"]: unknown operator "contains"',
  ],
  'unknown-rule-key.yaml': ['6:5: rules[0]: unknown key "priority"'],
  'unknown-tag.yaml': ['5:13: Unresolved tag: tag:yaml.org,2002:js/function'],
  'unknown-top-level-key.yaml': ['2:1: policy: unknown key "descripton"'],
  'version.yaml': ['1:10: version: Invalid input: expected 1'],
  'wrong-types.yaml': [
    '1:10: version: Invalid input: expected 1',
    '3:14: description: Invalid input: expected string, received number',
    '5:11: rules[0].name: Invalid input: expected string, received number',
    '8:28: rules[0].conditions.path.starts_with: Invalid input: expected string, received number',
    '13:19: rules[1].conditions.path.in: Invalid input: expected array, received string',
    '18:26: rules[2].conditions["args.amount"].gt: Invalid input: expected number, received string',
    `22:13: rules[3].effect: ${ONE_OF_EFFECTS}`,
    '26:25: rules[4].conditions["args.x"].equals: Invalid input',
    `31:21: .nan is not allowed: ${NOT_FINITE}`,
    '31:21: rules[5].conditions["args.x"].lt: Invalid input: expected number, received NaN',
  ],
  'yaml-1-1.yaml': [
    '1:1: %YAML directive names version 1.1: only YAML 1.2 is accepted (remove the directive or write %YAML 1.2)',
  ],
  'yaml-syntax.yaml': ['5:1: Missing closing "quote'],
};

describe('invalid policies', () => {
  it('every fixture has an expectation and every expectation a fixture', () => {
    const files = readdirSync(INVALID).filter((f) => f.endsWith('.yaml'));
    expect(files.sort()).toEqual(Object.keys(EXPECTED).sort());
  });

  it.for(Object.entries(EXPECTED))('%s', async ([file, want]) => {
    const path = join(INVALID, file);
    const r = await tryLoadPolicy(path);
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.diagnostics.map(formatDiagnostic)).toEqual(want.map((w) => `${path}:${w}`));
  });

  it('compilePolicy never throws on them', () => {
    for (const file of Object.keys(EXPECTED)) {
      expect(() => compilePolicy(readFileSync(join(INVALID, file), 'utf8'), file)).not.toThrow();
    }
  });

  it('loadPolicy throws SIDECAR_ERR_POLICY_INVALID listing every problem', async () => {
    const path = join(INVALID, 'several-problems.yaml');
    const err = await loadPolicy(path).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isSidecarError(err) && err.code).toBe('SIDECAR_ERR_POLICY_INVALID');
    expect(String((err as Error).message).split('\n')).toHaveLength(
      EXPECTED['several-problems.yaml']?.length ?? 0,
    );
  });

  it('an unreadable file is one diagnostic, not an exception', async () => {
    const path = join(INVALID, 'does-not-exist.yaml');
    const r = await tryLoadPolicy(path);
    expect(r.ok ? [] : r.diagnostics.map(formatDiagnostic)).toEqual([
      `${path}:1:1: cannot read file (ENOENT)`,
    ]);
  });
});

describe('the rejection classes, inline', () => {
  const diag = (text: string) => {
    const r = parsePolicyText(text, 'p.yaml');
    return r.ok ? [] : r.diagnostics.map(formatDiagnostic);
  };
  const rule = (body: string) => `agent: a\nrules:\n  - name: r\n${body}`;

  it.for([
    [
      'a typo in `conditions` never widens the rule',
      rule('    action: file_read\n    condition:\n      path: { equals: /x }\n    effect: ALLOW\n'),
      'p.yaml:5:5: rules[0]: unknown key "condition"',
    ],
    [
      'a misspelt effect key',
      rule('    action: file_read\n    efect: ALLOW\n'),
      'p.yaml:5:5: rules[0]: unknown key "efect"',
    ],
    ['a tab-indented document is a YAML error', 'agent: a\nrules:\n\t- name: r\n', 'p.yaml:3:1:'],
    ['an agent that starts with a dot', 'agent: .hidden\nrules: []\n', `p.yaml:1:8: agent: ${AGENT_CHARS}`],
    ['an agent with a slash', 'agent: a/b\nrules: []\n', `p.yaml:1:8: agent: ${AGENT_CHARS}`],
    [
      'an agent of 129 characters',
      `agent: ${'a'.repeat(129)}\nrules: []\n`,
      `p.yaml:1:8: agent: ${AGENT_CHARS}`,
    ],
    [
      'an agent as a number',
      'agent: 7\nrules: []\n',
      'p.yaml:1:8: agent: Invalid input: expected string, received number',
    ],
    [
      'an effect in lower case',
      rule('    action: model\n    effect: deny\n'),
      `p.yaml:5:13: rules[0].effect: ${ONE_OF_EFFECTS}`,
    ],
    [
      'a glob with a partial label',
      rule(
        '    action: network\n    conditions:\n      host: { glob: "*api.example.com" }\n    effect: ALLOW\n',
      ),
      `p.yaml:6:21: rules[0].conditions.host.glob: ${BAD_GLOB}`,
    ],
    [
      'a glob with an empty label',
      rule(
        '    action: network\n    conditions:\n      host: { glob: "*..example.com" }\n    effect: ALLOW\n',
      ),
      `p.yaml:6:21: rules[0].conditions.host.glob: ${BAD_GLOB}`,
    ],
    // An IPv4 glob matches IPv4 addresses only, so one that fits no dotted quad would match nothing: refused, with
    // the pointer to address.in_cidr (`192.168.*` once matched only names such as `192.168.attacker`).
    ...['10.*', '192.168.*', '1.2.3.4.*', '10.0.0.0.**', '010.*.*.*', '256.*.*.*'].map(
      (glob) =>
        [
          `an IPv4 glob no address fits: ${glob}`,
          rule(`    action: network\n    conditions:\n      host: { glob: "${glob}" }\n    effect: ALLOW\n`),
          `p.yaml:6:21: rules[0].conditions.host.glob: ${BAD_IPV4_GLOB}`,
        ] as const,
    ),
    [
      'a CIDR with a bad prefix',
      rule(
        '    action: network\n    conditions:\n      address: { in_cidr: [10.0.0.0/08x] }\n    effect: ALLOW\n',
      ),
      `p.yaml:6:28: rules[0].conditions.address.in_cidr[0]: ${BAD_CIDR}`,
    ],
    [
      'a command with a redirection',
      rule(
        '    action: shell_exec\n    conditions:\n      command: { equals: "cat > /x" }\n    effect: DENY\n',
      ),
      `p.yaml:6:26: rules[0].conditions.command.equals: ${BAD_COMMAND}`,
    ],
    [
      'a url prefix with a fragment',
      rule(
        '    action: network\n    conditions:\n      url: { starts_with: "https://a.example/#x" }\n    effect: ALLOW\n',
      ),
      `p.yaml:6:27: rules[0].conditions.url.starts_with: ${BAD_PREFIX}`,
    ],
    [
      'a url equals with a javascript scheme',
      rule(
        '    action: network\n    conditions:\n      url: { equals: "javascript:alert(1)" }\n    effect: DENY\n',
      ),
      `p.yaml:6:22: rules[0].conditions.url.equals: ${BAD_URL}`,
    ],
    [
      'a relative path in a list',
      rule('    action: file_read\n    conditions:\n      path: { in: [/ok, rel] }\n    effect: ALLOW\n'),
      `p.yaml:6:25: rules[0].conditions.path.in[1]: ${BAD_PATH}`,
    ],
    [
      'an args key with a space',
      rule('    action: tool_call\n    conditions:\n      "args.a b": { equals: 1 }\n    effect: ALLOW\n'),
      'p.yaml:6:7: rules[0].conditions: condition field "args.a b" does not apply to action tool_call (allowed: tool, args.<dotted.key>)',
    ],
    [
      'a bare `args` key',
      rule('    action: tool_call\n    conditions:\n      args: { equals: 1 }\n    effect: ALLOW\n'),
      'p.yaml:6:7: rules[0].conditions: condition field "args" does not apply to action tool_call (allowed: tool, args.<dotted.key>)',
    ],
  ] as const)('%s', ([, text, want]) => {
    const lines = diag(text);
    expect(
      lines.some((l) => l.startsWith(want)),
      lines.join('\n'),
    ).toBe(true);
  });
});

describe('valid policies', () => {
  it('the fixture with every operator loads', async () => {
    const r = await tryLoadPolicy(join(VALID, 'every-operator.yaml'));
    expect(r.ok ? r.policy.rules.map((x) => x.name) : r.diagnostics.map(formatDiagnostic)).toHaveLength(9);
  });

  it.for(readdirSync(POLICIES).filter((f) => /^[a-z-]+\.yaml$/.test(f)))('shipped %s loads', async (file) => {
    const r = await tryLoadPolicy(join(POLICIES, file));
    expect(r.ok ? [] : r.diagnostics.map(formatDiagnostic)).toEqual([]);
    if (r.ok) expect(`${r.policy.agent}.yaml`).toBe(file);
  });

  it.for(['10.**', '**.1', '0.*.255.*', '*.*.*.*', '*.7.shards.example.dev'])(
    'the host glob %s loads',
    (glob) => {
      const r = compilePolicy(
        `agent: a\nrules:\n  - { name: r, action: network, conditions: { host: { glob: "${glob}" } }, effect: ALLOW }\n`,
        'p.yaml',
      );
      expect(r.ok ? [] : r.diagnostics.map(formatDiagnostic)).toEqual([]);
    },
  );

  it('an empty rule list is valid and denies everything', () => {
    const r = compilePolicy('agent: nobody\nrules: []\n', 'p.yaml');
    expect(r.ok && r.policy.evaluate({ type: 'model', model: 'x' })).toEqual({
      effect: 'DENY',
      rule: null,
      reason: 'no_rule_matched',
    });
  });

  it('the digest is the sha256 of the bytes', () => {
    const text = 'agent: a\nrules: []\n';
    const r = compilePolicy(text, 'p.yaml');
    expect(r.ok && r.policy.digest).toBe(createHash('sha256').update(text).digest('hex'));
  });
});
