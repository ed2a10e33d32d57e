// agents/helpdesk-tools/README.md's role table must say what DEFAULT_HELPDESK_ALLOWLIST does.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_HELPDESK_ALLOWLIST, HELPDESK_TOOLS } from '../../../agents/helpdesk-tools/server.ts';

const README = readFileSync(join(import.meta.dirname, '../../../agents/helpdesk-tools/README.md'), 'utf8');
const ROLES = ['basic-user', 'support-agent', 'admin'] as const;

function tableAllowlist(): Record<string, string[]> {
  const out: Record<string, string[]> = { 'basic-user': [], 'support-agent': [], admin: [] };
  for (const line of README.split('\n')) {
    const cells = line
      .replaceAll('\\|', '')
      .split('|')
      .map((c) => c.trim());
    const tool = /^`([a-z_]+)`$/.exec(cells[1] ?? '')?.[1];
    if (tool === undefined || !(HELPDESK_TOOLS as readonly string[]).includes(tool)) continue;
    ROLES.forEach((role, i) => {
      if (cells[3 + i]?.startsWith('yes')) out[role]!.push(tool);
    });
  }
  return out;
}

describe('helpdesk-tools README', () => {
  // The server lets basic users call get_user_info (about themselves only, SELF_ONLY), as docs/demo.md step 1 says.
  it('the tools table matches the server allowlist for basic-user', () => {
    expect(tableAllowlist()['basic-user']!.sort()).toEqual(
      [...DEFAULT_HELPDESK_ALLOWLIST['basic-user']!].sort(),
    );
  });
});
