// A policy is read as YAML 1.2 and nothing else: a `%YAML` directive naming any other version is refused at the
// directive (YAML 1.1 would turn on merge keys and read `off`, `y`, `0755`, `1:30` as false, true, 493, 90), and a
// merge key is refused at the key whatever its spelling (`<<`, or `!!merge <<`, which the yaml package would still
// merge in YAML 1.2 mode). Both are refused before any value is built, so no merged or 1.1-typed value is used.
import { describe, expect, it } from 'vitest';
import { formatDiagnostic } from '../../../sidecar/policy/load.ts';
import { compilePolicy } from '../../../sidecar/policy/policy.ts';

const diagnostics = (text: string) => {
  const r = compilePolicy(text, 'p.yaml');
  return r.ok
    ? r.policy.rules.map((x) => `loaded ${x.name}:${x.effect}`)
    : r.diagnostics.map(formatDiagnostic);
};

const MERGE_KEY = 'merge key "<<" is not allowed: YAML 1.2 has no merge keys (write the keys out in full)';

const MERGE_TAG = `agent: a
rules:
  - &r
    name: deny-all-reads
    action: file_read
    effect: DENY
  - !!merge <<: *r
    name: r2
    effect: ALLOW
`;

const MERGE_UNDER_1_1 = `%YAML 1.1
---
agent: a
rules:
  - &r
    name: deny-data
    action: file_read
    conditions:
      path: { starts_with: /data }
    effect: DENY
  - <<: *r
    name: r2
    effect: ALLOW
`;

const TYPED_BODY = `agent: a
rules:
  - name: r
    action: tool_call
    conditions:
      args.mode: { equals: off }
      args.perm: { equals: 0755 }
      args.n: { in: [1:30] }
    effect: ALLOW
`;

describe('merge keys are refused, whatever their spelling', () => {
  it('`!!merge <<: *anchor` is refused at the key, and nothing is merged into the rule', () => {
    // Had the merge happened, rules[1] would have an action and only the merge key would be reported.
    expect(diagnostics(MERGE_TAG)).toEqual([
      `p.yaml:7:13: ${MERGE_KEY}`,
      'p.yaml:7:13: rules[1].action: is required (expected one of: file_read, file_write, shell_exec, network, tool_call, model)',
    ]);
  });

  it.each([
    ['a plain `<<`', '  - name: r2\n    <<: *r\n', 'p.yaml:8:5'],
    ['a quoted `"<<"`', '  - name: r2\n    "<<": *r\n', 'p.yaml:8:5'],
    ['`!!merge` on another key', '  - name: r2\n    !!merge x: *r\n', 'p.yaml:8:13'],
    ['`<<` in a flow mapping', '  - { name: r2, <<: *r }\n', 'p.yaml:7:17'],
    [
      '`<<` in a nested mapping',
      '  - name: r2\n    conditions:\n      <<: { path: { equals: /x } }\n',
      'p.yaml:9:7',
    ],
  ])('%s is refused at the key', (_note, rule, where) => {
    const text = `agent: a\nrules:\n  - &r\n    name: r\n    action: file_read\n    effect: DENY\n${rule}`;
    expect(diagnostics(text)).toContain(`${where}: ${MERGE_KEY}`);
  });
});

describe('a `!!merge` scalar is refused wherever it stands', () => {
  it('an anchored `!!merge` value (which an alias key could reuse) is refused at the value', () => {
    expect(diagnostics('agent: a\nx: &m !!merge <<\nrules: []\n')).toContain(`p.yaml:2:15: ${MERGE_KEY}`);
  });
});

describe('a policy is read as YAML 1.2 only', () => {
  it('`%YAML 1.1` is refused at the directive, so its merge key never merges', () => {
    expect(diagnostics(MERGE_UNDER_1_1)).toEqual([
      'p.yaml:1:1: %YAML directive names version 1.1: only YAML 1.2 is accepted (remove the directive or write %YAML 1.2)',
    ]);
  });

  it('`%YAML 1.1` is refused rather than turning `off`, `0755` and `1:30` into false, 493 and 90', () => {
    expect(compilePolicy(TYPED_BODY, 'p.yaml').ok).toBe(true);
    expect(diagnostics(`%YAML 1.1\n---\n${TYPED_BODY}`)).toEqual([
      'p.yaml:1:1: %YAML directive names version 1.1: only YAML 1.2 is accepted (remove the directive or write %YAML 1.2)',
    ]);
  });

  it('a later `%YAML 1.1` overriding `%YAML 1.2` is refused where it stands', () => {
    expect(diagnostics(`%YAML 1.2\n%YAML 1.1\n---\n${TYPED_BODY}`)).toEqual([
      'p.yaml:2:1: %YAML directive names version 1.1: only YAML 1.2 is accepted (remove the directive or write %YAML 1.2)',
    ]);
  });

  it('an unknown version is refused too', () => {
    expect(diagnostics(`%YAML 1.3\n---\n${TYPED_BODY}`)).toContain(
      'p.yaml:1:1: %YAML directive names version 1.3: only YAML 1.2 is accepted (remove the directive or write %YAML 1.2)',
    );
  });

  it('`%YAML 1.2` reads exactly like the same text without the directive', () => {
    const plain = compilePolicy(TYPED_BODY, 'p.yaml');
    const v12 = compilePolicy(`%YAML 1.2\n---\n${TYPED_BODY}`, 'p.yaml');
    expect(v12.ok && v12.policy.rules[0]?.conditions).toEqual(plain.ok && plain.policy.rules[0]?.conditions);
    expect(v12.ok).toBe(true);
  });
});
