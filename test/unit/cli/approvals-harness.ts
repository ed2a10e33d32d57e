// A real admin listener and approval queue for running `agent-sidecar approvals` in-process, with a fake terminal.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { ApprovalQueue } from '../../../sidecar/approvals/approval-queue.ts';
import { redactForApprover } from '../../../sidecar/audit/redact.ts';
import { approvalsCommand } from '../../../sidecar/cli/approvals-command.ts';
import { actionDigest } from '../../../sidecar/policy/policy.ts';
import type { AdminListener } from '../../../sidecar/server/admin-listener.ts';
import { createAdminHandler, startAdminListener } from '../../../sidecar/server/admin-listener.ts';
import { createMetrics } from '../../../sidecar/server/metrics.ts';
import { type CliRun, recordingIo } from '../../support/cli-io.ts';

export type { CliRun };

/**
 * The approver at a terminal: gets the question and everything printed to stdout before it, and answers (undefined
 * is Ctrl-D). Leaving it out runs the command with no terminal (a script, a pipe, `docker exec` without -t).
 */
export type Terminal = (question: string, shownSoFar: string) => Promise<string | undefined>;

export interface AdminApi {
  readonly queue: ApprovalQueue;
  /** The flags that point the CLI at this admin API. */
  admin(): string[];
  run(args: string[], terminal?: Terminal): Promise<CliRun>;
  /** Holds `action` for approval as the enforcer does: the approver's view, bound to the real action's hash. */
  hold(action: unknown, decisionId?: string): { outcome: Promise<unknown>; id: string; hash: string };
}

/** Registers the hooks that give every test of the calling file a fresh queue behind a real admin listener. */
export function useAdminApi(): AdminApi {
  const token = randomBytes(32).toString('base64url');
  let root = '';
  let tokenFile = '';
  let queue: ApprovalQueue | undefined;
  let listener: AdminListener | undefined;
  let url = '';

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'approvals-cli-'));
    tokenFile = join(root, 'token');
    await writeFile(tokenFile, `${token}\n`, { mode: 0o600 });
  });
  beforeEach(async () => {
    queue = new ApprovalQueue({ setTimer: () => 0, clearTimer: () => undefined });
    listener = await startAdminListener(
      { host: '127.0.0.1', port: 0 },
      createAdminHandler({
        token,
        approvals: queue,
        metrics: createMetrics(),
        logger: pino({ level: 'silent' }),
        ready: () => true,
      }),
    );
    if (!('url' in listener.address)) throw new Error('expected a TCP address');
    url = listener.address.url;
  });
  afterEach(async () => {
    queue?.cancelAll('test over');
    await listener?.close();
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const api: AdminApi = {
    get queue() {
      if (queue === undefined) throw new Error('no queue outside a test');
      return queue;
    },
    admin: () => ['--admin-url', url, '--admin-token-file', tokenFile],
    async run(args, terminal) {
      const { io, result: r } = recordingIo(terminal);
      try {
        await approvalsCommand(io, {}).parseAsync(args, { from: 'user' });
      } catch (err) {
        if (!(err instanceof Error && 'exitCode' in err)) throw err;
      }
      return r;
    },
    hold(action, decisionId = 'dec-1') {
      const q = api.queue;
      const hash = actionDigest(action);
      const outcome = q.request({
        decisionId,
        agent: 'helpdesk',
        rule: 'shell-needs-approval',
        action: redactForApprover(action),
        actionHash: hash,
      });
      return { outcome, id: q.list().at(-1)!.id, hash };
    },
  };
  return api;
}

/** What a promise has settled to so far, without waiting for it. */
export async function settledSoFar(p: Promise<unknown>): Promise<unknown> {
  return Promise.race([p, new Promise((resolve) => setImmediate(() => resolve('still pending')))]);
}
