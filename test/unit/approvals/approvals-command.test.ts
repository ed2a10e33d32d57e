// `agent-sidecar approvals` in-process against a real admin listener: output, binding to the hash, exit codes.
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ApprovalQueue } from '../../../sidecar/approvals/approval-queue.ts';
import { approvalsCommand } from '../../../sidecar/cli/approvals-command.ts';
import { actionDigest } from '../../../sidecar/policy/policy.ts';
import type { AdminListener } from '../../../sidecar/server/admin-listener.ts';
import { createAdminHandler, startAdminListener } from '../../../sidecar/server/admin-listener.ts';
import { createMetrics } from '../../../sidecar/server/metrics.ts';
import { type CliRun, recordingIo } from '../../support/cli-io.ts';

const TOKEN = randomBytes(32).toString('base64url');
const ACTION = { type: 'tool_call', tool: 'refund', args: { order: 'A-17', amount: 40 } };
const HASH = actionDigest(ACTION);

let root: string;
let tokenFile: string;
let wrongTokenFile: string;
let queue: ApprovalQueue;
let listener: AdminListener;
let url: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'approvals-cli-'));
  tokenFile = join(root, 'token');
  await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  wrongTokenFile = join(root, 'wrong-token');
  await writeFile(wrongTokenFile, randomBytes(32).toString('base64url'), { mode: 0o600 });
});

function handler() {
  return createAdminHandler({
    token: TOKEN,
    approvals: queue,
    metrics: createMetrics(),
    logger: pino({ level: 'silent' }),
    ready: () => true,
  });
}

beforeEach(async () => {
  queue = new ApprovalQueue({ setTimer: () => 0, clearTimer: () => undefined });
  listener = await startAdminListener({ host: '127.0.0.1', port: 0 }, handler());
  if (!('url' in listener.address)) throw new Error('expected a TCP address');
  url = listener.address.url;
});

afterEach(async () => {
  queue.cancelAll('test over');
  await listener.close();
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/**
 * Runs `approvals <args>` with a fake io and the given environment (none of the process's). `answer` makes it a
 * terminal where the approver types that answer to any question; without it there is no terminal.
 */
async function run(args: string[], env: Record<string, string> = {}, answer?: string): Promise<CliRun> {
  const { io, result: r } = recordingIo(answer === undefined ? undefined : async () => answer);
  try {
    await approvalsCommand(io, env).parseAsync(args, { from: 'user' });
  } catch (err) {
    // Commander usage errors are printed, then thrown for the top-level CLI to swallow.
    if (!(err instanceof Error && 'exitCode' in err)) throw err;
  }
  return r;
}

function admin(): string[] {
  return ['--admin-url', url, '--admin-token-file', tokenFile];
}

function hold(decisionId = 'dec-1', action: unknown = ACTION) {
  const outcome = queue.request({
    decisionId,
    agent: 'helpdesk',
    rule: 'refunds-need-approval',
    action,
    actionHash: actionDigest(action),
  });
  return { outcome, id: queue.list().at(-1)!.id };
}

describe('approvals list', () => {
  it('says when nothing is pending', async () => {
    const r = await run(['list', ...admin()]);
    expect(r).toEqual({ code: 0, stdout: 'no pending approvals\n', stderr: '' });
  });

  it('prints a table of pending approvals', async () => {
    const { id } = hold();
    const r = await run(['list', ...admin()]);
    expect(r.code).toBe(0);
    const [header, row, ...rest] = r.stdout.trimEnd().split('\n');
    expect(rest).toEqual([]);
    expect(header).toMatch(/^ID\s+AGENT\s+RULE\s+EXPIRES\s+HASH\s+ACTION$/);
    expect(row).toContain(id);
    expect(row).toContain('helpdesk');
    expect(row).toContain('refunds-need-approval');
    expect(row).toContain(HASH.slice(0, 12));
    expect(row).toContain('"tool":"refund"');
  });

  it('prints the admin API objects with --json', async () => {
    const { id } = hold();
    const r = await run(['list', '--json', ...admin()]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([
      expect.objectContaining({ id, decision_id: 'dec-1', action: ACTION, action_hash: HASH }),
    ]);
  });

  it('escapes terminal control characters an agent put in its action', async () => {
    hold('dec-evil', { type: 'tool_call', tool: 'x', args: { note: 'a\u009b31mred\u202Eb\u001b[2J' } });
    const table = await run(['list', ...admin()]);
    const shown = await run(['show', queue.list()[0]!.id, ...admin()]);
    const asked = await run(['approve', queue.list()[0]!.id, '--as', 'alice', ...admin()], {}, 'n');
    expect(asked.code).toBe(1);
    for (const out of [table.stdout, shown.stdout, asked.stdout]) {
      expect(out).not.toMatch(/[\u001b\u009b\u202e]/);
      expect(out).toContain('\\u009b');
      expect(out).toContain('\\u202e');
    }
  });

  it('reaches the admin API through a unix socket', async () => {
    const socketPath = join(root, 'admin.sock');
    const unix = await startAdminListener({ socketPath }, handler());
    try {
      const { id } = hold();
      const r = await run(['list', '--admin-socket', socketPath, '--admin-token-file', tokenFile]);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain(id);
    } finally {
      await unix.close();
    }
  });

  it('takes the admin URL and token file from the environment', async () => {
    const { id } = hold();
    const r = await run(['list'], { SIDECAR_ADMIN_URL: url, SIDECAR_ADMIN_TOKEN_FILE: tokenFile });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(id);
  });
});

describe('approvals approve', () => {
  it('on a terminal, shows the action, asks, binds to its hash, and approves it', async () => {
    const { outcome, id } = hold();
    const r = await run(['approve', id, '--as', 'alice@ops', ...admin()], {}, 'y');
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`approving ${id} (decision dec-1, agent helpdesk, rule refunds-need-approval`);
    expect(r.stdout).toContain(`action (sha256 ${HASH}):`);
    expect(r.stdout).toContain(
      '{\n  "type": "tool_call",\n  "tool": "refund",\n  "args": {\n    "order": "A-17",\n    "amount": 40\n  }\n}\n',
    );
    expect(r.stdout).toContain(`approved ${id} (decision dec-1) as alice@ops`);
    await expect(outcome).resolves.toEqual({ outcome: 'approved', approver: 'alice@ops' });
  });

  it('exits 1 when the approval is gone (approved twice)', async () => {
    const { id } = hold();
    expect((await run(['approve', id, '--as', 'alice', '--hash', HASH, ...admin()])).code).toBe(0);
    const again = await run(['approve', id, '--as', 'alice', ...admin()], {}, 'y');
    expect(again.code).toBe(1);
    expect(again.stderr).toContain(`no pending approval ${id}`);
    const againWithHash = await run(['approve', id, '--as', 'alice', '--hash', HASH, ...admin()]);
    expect(againWithHash.code).toBe(1);
    expect(againWithHash.stderr).toContain(`no pending approval ${id}`);
  });

  it('approves with --hash only when the pending action has that hash', async () => {
    const { outcome, id } = hold();
    const wrong = await run(['approve', id, '--as', 'alice', '--hash', 'e'.repeat(64), ...admin()]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toContain('does not match');
    expect(queue.size).toBe(1);

    const right = await run(['approve', id, '--as', 'alice', '--hash', HASH.toUpperCase(), ...admin()]);
    expect(right.code).toBe(0);
    expect(right.stdout).toBe(`approved ${id} (decision dec-1) as alice\n`);
    await expect(outcome).resolves.toEqual({ outcome: 'approved', approver: 'alice' });
  });

  it('names the approver $USER@hostname by default', async () => {
    const { outcome, id } = hold();
    const r = await run(['approve', id, '--hash', HASH, ...admin()], { USER: 'carol' });
    expect(r.code).toBe(0);
    await expect(outcome).resolves.toEqual({ outcome: 'approved', approver: `carol@${hostname()}` });
  });
});

describe('approvals deny', () => {
  it('denies a pending action', async () => {
    const { outcome, id } = hold();
    const r = await run(['deny', id, '--as', 'bob', ...admin()]);
    expect(r).toEqual({ code: 0, stdout: `denied ${id} (decision dec-1) as bob\n`, stderr: '' });
    await expect(outcome).resolves.toEqual({ outcome: 'denied', approver: 'bob' });
  });

  it('exits 1 for an unknown id', async () => {
    const r = await run(['deny', '00000000-0000-4000-8000-000000000000', '--as', 'bob', ...admin()]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no pending approval');
  });

  it('needs neither a terminal nor a hash (it releases nothing)', async () => {
    const { outcome, id } = hold();
    expect((await run(['deny', id, '--as', 'bob', ...admin()])).code).toBe(0);
    await expect(outcome).resolves.toEqual({ outcome: 'denied', approver: 'bob' });
  });
});

describe('approvals misuse and failures', () => {
  async function closedPortUrl(): Promise<string> {
    const s = createServer().listen(0, '127.0.0.1');
    await once(s, 'listening');
    const { port } = s.address() as { port: number };
    await new Promise((resolve) => s.close(resolve));
    return `http://127.0.0.1:${port}`;
  }

  it.each([
    { note: 'no token file', args: () => ['list', '--admin-url', url], message: 'no admin token' },
    {
      note: 'a token file that is not there',
      args: () => ['list', '--admin-url', url, '--admin-token-file', join(root, 'absent')],
      message: 'admin token file',
    },
    {
      note: 'a wrong token',
      args: () => ['list', '--admin-url', url, '--admin-token-file', wrongTokenFile],
      message: 'refused the token',
    },
    {
      note: 'both a URL and a socket',
      args: () => ['list', ...admin(), '--admin-socket', join(root, 'x.sock')],
      message: 'not both',
    },
    {
      note: 'a URL that is not http',
      args: () => ['list', '--admin-url', 'ftp://x', '--admin-token-file', tokenFile],
      message: 'http',
    },
    { note: 'an invalid --as', args: () => ['deny', 'some-id', '--as', 'a\nb', ...admin()], message: '--as' },
    {
      note: 'a --hash that is not one',
      args: () => ['approve', 'x', '--hash', 'abc', ...admin()],
      message: '--hash',
    },
    {
      note: 'approve without --hash and no terminal to confirm on',
      args: () => ['approve', 'x', '--as', 'alice', ...admin()],
      message: 'no terminal to confirm on',
    },
  ])('exits 2 for $note', async ({ args, message }) => {
    const r = await run(args());
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
  });

  it('exits 2 when the admin API cannot be reached', async () => {
    const down = await closedPortUrl();
    const r = await run(['list', '--admin-url', down, '--admin-token-file', tokenFile]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`cannot reach the admin API at ${down}`);
  });

  it('exits 2 for commander usage errors', async () => {
    expect((await run(['approve', ...admin()])).code).toBe(2);
    expect((await run(['list', '--bogus', ...admin()])).code).toBe(2);
    expect((await run(['frobnicate'])).code).toBe(2);
  });
});
