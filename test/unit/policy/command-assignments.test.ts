// docs/policy.md ("command and argv"): a leading `NAME=value` is refused (unevaluable), like every command a shell
// would not take literally. A shell reads `NAME=` as an assignment whenever that part is unquoted, whatever is
// quoted after it: `FOO="x" rm` sets FOO and runs rm, exactly like `FOO=x rm`. Only a quoted name or `=` is a word.
import { describe, expect, it } from 'vitest';
import { lexCommand } from '../../../sidecar/policy/normalize/argv.ts';
import { compilePolicy, type Policy } from '../../../sidecar/policy/policy.ts';

function policy(text: string): Policy {
  const r = compilePolicy(text, 'inline.yaml');
  if (!r.ok) throw new Error(r.diagnostics.map((d) => d.message).join('\n'));
  return r.policy;
}

// A narrow DENY first, a broad ALLOW after: the layout docs/policy.md recommends.
const denyRm = policy(`agent: coder
rules:
  - name: no-rm
    action: shell_exec
    conditions:
      command: { starts_with: rm }
    effect: DENY
  - name: anything-else
    action: shell_exec
    effect: ALLOW
`);

// A shell runs each of these as `rm ...` (or `npm ...`) with a variable set in its environment.
const QUOTED_VALUE_ASSIGNMENTS = [
  'FOO="x" rm -rf /',
  "FOO='' rm -rf /",
  'FOO=\\x rm -rf /',
  'NODE_OPTIONS="--require=/tmp/x.js" rm -rf /',
];

describe('a leading NAME=value whose value is quoted is still an assignment', () => {
  it.each(QUOTED_VALUE_ASSIGNMENTS)('lexCommand refuses %s', (command) => {
    expect(lexCommand(command).ok).toBe(false);
  });

  it.each(QUOTED_VALUE_ASSIGNMENTS)('a DENY on `rm` catches %s (unevaluable)', (command) => {
    expect(denyRm.evaluate({ type: 'shell_exec', command })).toEqual({
      effect: 'DENY',
      rule: 'no-rm',
      reason: 'unevaluable_condition',
    });
  });
});

describe('a quoted name or a quoted = is an ordinary word, as in a shell', () => {
  it.each([
    ["'A'=b run", ['A=b', 'run']],
    ['A"B"=c run', ['AB=c', 'run']],
    ['A\\=b run', ['A=b', 'run']],
    ['"FOO=x" rm', ['FOO=x', 'rm']],
    ['npm run build FOO="x"', ['npm', 'run', 'build', 'FOO=x']],
  ])('lexCommand(%s) is %j', (command, argv) => {
    expect(lexCommand(command)).toEqual({ ok: true, argv });
  });
});
