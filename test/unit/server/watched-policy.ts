// Shared by the policy reload tests: a policy whose one rule's effect is the variable, the action it decides, and a
// bounded wait for a state (never an assertion on elapsed time).

export const watchedPolicy = (effect: 'ALLOW' | 'DENY') => `
agent: tester
rules:
  - name: r
    action: shell_exec
    conditions: { command: { equals: "rm -rf /data" } }
    effect: ${effect}
`;

export const WATCHED_ACTION = { type: 'shell_exec', command: 'rm -rf /data' } as const;

/** Polls `check` until it holds or `boundMs` passes; the bound is generous, the test asserts on the state. */
export async function until(check: () => boolean, boundMs = 8_000): Promise<boolean> {
  const end = Date.now() + boundMs;
  while (Date.now() < end) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return check();
}
