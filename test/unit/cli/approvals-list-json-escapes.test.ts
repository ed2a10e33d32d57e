// `approvals list --json` prints no raw control, format or separator character from an agent's action, and stays
// valid JSON with the same values.
//
// Why it matters: --json is the documented way to read a whole action and its hash before `approve --hash`, so an
// approver reads it on a terminal. JSON.stringify escapes only U+0000..U+001F: 8-bit C1 controls (CSI, OSC, ST)
// could clear the screen, retitle the terminal or write the clipboard, and a bidi override makes `rm -rf /` read
// `/ fr- mr`. The table and `show` escape these; --json now does too (cli/io.ts terminalSafeJson).
// (Review round 5, ops: r5-ops-approvals-json.)
import { describe, expect, it } from 'vitest';
import { useAdminApi } from './approvals-harness.ts';
import { HOSTILE_CHARS, unsafeIn } from './terminal-chars.ts';

const api = useAdminApi();

describe('approvals list --json', () => {
  it('prints no raw C1 controls or bidi overrides from an action (and stays valid JSON)', async () => {
    const action = {
      type: 'tool_call',
      tool: 'shell',
      // 8-bit CSI (clear screen, home), OSC 0 (title) and OSC 52 (clipboard) ended by ST, then a bidi override that
      // makes `rm -rf /` read as `/ fr- mr` on a bidi terminal.
      args: { cmd: '\u009b2J\u009bH\u009d0;ls\u009c\u009d52;c;bHMK\u009cls \u202e/ fr- mr' },
    };
    const { hash } = api.hold(action);
    const r = await api.run(['list', '--json', ...api.admin()]);
    expect(r.code).toBe(0);
    const [item] = JSON.parse(r.stdout);
    expect(item.action).toEqual(action);
    expect(item.action_hash).toBe(hash);
    // Line feeds are the pretty-printer's own; every other control or format character came from the agent.
    expect(unsafeIn(r.stdout)).toEqual([]);
  });

  it.each(HOSTILE_CHARS)('escapes $name in an action, its keys included', async ({ char }) => {
    const action = { type: 'tool_call', tool: `t${char}`, args: { [`k${char}`]: `v${char}` } };
    api.hold(action);
    const r = await api.run(['list', '--json', ...api.admin()]);
    expect(r.code).toBe(0);
    expect(unsafeIn(r.stdout)).toEqual([]);
    expect(JSON.parse(r.stdout)[0].action).toEqual(action);
  });
});
