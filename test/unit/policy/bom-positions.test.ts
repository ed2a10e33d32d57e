// A policy saved with a UTF-8 byte order mark loads like the plain file, and its diagnostics point at the same
// `file:line:col`: the mark is not a character of line 1, so columns there are not shifted one to the right, and
// positions on the other lines stay as they are.
import { describe, expect, it } from 'vitest';
import { formatDiagnostic } from '../../../sidecar/policy/load.ts';
import { compilePolicy } from '../../../sidecar/policy/policy.ts';

const diagnostics = (text: string) => {
  const r = compilePolicy(text, 'p.yaml');
  return r.ok ? [] : r.diagnostics.map(formatDiagnostic);
};

describe('a byte order mark does not shift positions', () => {
  it.each([
    ['a schema problem on line 1', 'agent: "bad name"\nrules: []\n', ['p.yaml:1:8: agent:']],
    ['an unknown key on line 1', 'agnet: a\nrules: []\n', ['p.yaml:1:1: policy: unknown key "agnet"']],
    ['a merge key on line 1', '<<: { agent: a }\nrules: []\n', ['p.yaml:1:1: merge key "<<"']],
    [
      'a YAML version directive on line 1',
      '%YAML 1.1\n---\nagent: a\nrules: []\n',
      ['p.yaml:1:1: %YAML directive'],
    ],
    [
      'problems on line 1 and later lines',
      'agent: "bad name"\nrules:\n  - name: r\n    action: file_read\n    efect: ALLOW\n',
      ['p.yaml:1:8: agent:', 'p.yaml:5:5: rules[0]: unknown key "efect"'],
    ],
    ['a YAML syntax error on line 1', 'agent: "a\nrules: []\n', ['p.yaml:']],
  ])('%s', (_note, text, starts) => {
    const plain = diagnostics(text);
    for (const start of starts) {
      expect(
        plain.some((line) => line.startsWith(start)),
        plain.join('\n'),
      ).toBe(true);
    }
    expect(diagnostics(`\ufeff${text}`)).toEqual(plain);
  });

  it('a policy with a byte order mark loads like the plain one', () => {
    const text = 'agent: a\nrules:\n  - name: r\n    action: model\n    effect: ALLOW\n';
    const plain = compilePolicy(text, 'p.yaml');
    const bom = compilePolicy(`\ufeff${text}`, 'p.yaml');
    expect(bom.ok && bom.policy.rules.map((r) => r.name)).toEqual(
      plain.ok && plain.policy.rules.map((r) => r.name),
    );
    expect(bom.ok).toBe(true);
  });
});
