// The `approvals` command: list, show, approve and deny held actions through a sidecar's admin API.
import { hostname, userInfo } from 'node:os';
import { Command } from 'commander';
import { Agent, request } from 'undici';
import { isValidApprover } from '../approvals/approval-queue.ts';
import { isSidecarError } from '../errors.ts';
import { loadAdminToken } from '../server/admin-auth.ts';
import type { PendingApprovalJson } from '../server/admin-listener.ts';
import { type CliIo, EXIT, terminalSafe as safe, terminalSafeJson } from './io.ts';

export const DEFAULT_ADMIN_URL = 'http://127.0.0.1:15001';

/** The environment variables the command reads (the matching flags win over them). */
export const ADMIN_ENV = {
  url: 'SIDECAR_ADMIN_URL',
  socket: 'SIDECAR_ADMIN_SOCKET',
  tokenFile: 'SIDECAR_ADMIN_TOKEN_FILE',
} as const;

const ACTION_HASH = /^[0-9a-fA-F]{64}$/;
const MAX_RESPONSE_BYTES = 4 * 1024 * 1024;

interface AdminOptions {
  readonly adminUrl?: string;
  readonly adminSocket?: string;
  readonly adminTokenFile?: string;
}

interface AdminTarget {
  readonly base: string;
  readonly socketPath?: string;
  readonly token: string;
  /** How to name the admin API in messages. */
  readonly where: string;
}

type AdminResponse =
  | { readonly kind: 'ok'; readonly body: unknown }
  | { readonly kind: 'error'; readonly status: number; readonly code: string | undefined }
  | { readonly kind: 'unreachable'; readonly message: string };

/** Ends the command with an exit code and a message on stderr. */
class Stop extends Error {
  readonly exitCode: number;

  constructor(exitCode: number, message: string) {
    super(message);
    this.exitCode = exitCode;
  }
}

/**
 * Builds `approvals list|show|approve|deny`. Exit codes: 0 done; 1 the approval is gone (decided, timed out, never
 * existed), was refused (the action changed) or was not confirmed; 2 misuse (`approve` without `--hash` and no
 * terminal to confirm on included), a missing or rejected admin token, or no admin API.
 * `env` is where the SIDECAR_ADMIN_* defaults and $USER come from (the process environment unless a test says).
 *
 * `approve` never approves an action the approver was not shown: without `--hash` it prints the whole action and
 * its hash and asks (io.ask, on a terminal only); with `--hash` the approval is bound to the action the approver
 * read in `show` or `list --json`. There is deliberately no `--yes`: it would approve whatever is pending under an
 * id, unseen, and would end up in every script and runbook.
 */
export function approvalsCommand(
  io: CliIo,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Command {
  const approvals = new Command('approvals')
    .description('list, show, approve and deny actions held for approval (through the sidecar admin API)')
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .exitOverride((err) => {
      io.setExit(err.exitCode === 0 ? EXIT.ok : EXIT.usage);
      throw err;
    });

  withAdminOptions(approvals.command('list'), env)
    .description('print the pending approvals')
    .option('--json', 'print the admin API objects as JSON')
    .action((opts: AdminOptions & { json?: boolean }) =>
      run(io, async () => {
        const pending = await fetchPending(await target(opts, env));
        if (opts.json) io.out(terminalSafeJson(pending, 2));
        else if (pending.length === 0) io.out('no pending approvals');
        else {
          io.out(formatApprovalTable(pending));
          if (pending.some((p) => actionCell(p).cut)) {
            io.out(
              `(an ACTION ending in "${CUT_MARK}(+N chars)" is cut: \`approvals show <id>\` prints it whole)`,
            );
          }
        }
      }),
    );

  withAdminOptions(approvals.command('show'), env)
    .description('print one pending action in full, with its hash (for `approve --hash`)')
    .argument('<id>', 'approval id (from `approvals list`)')
    .action((id: string, opts: AdminOptions) =>
      run(io, async () => {
        io.out(describeApproval(await fetchOne(await target(opts, env), id), 'approval'));
      }),
    );

  withAdminOptions(approvals.command('approve'), env)
    .description(
      'approve a pending action: with --hash, the action that has that hash; without, on a terminal only, after ' +
        'showing the whole action and asking for confirmation',
    )
    .argument('<id>', 'approval id (from `approvals list`)')
    .option('--as <approver>', 'who approves (default: $USER@hostname)')
    .option(
      '--hash <action_hash>',
      'approve only if the pending action has this sha256 (from `approvals show` or `approvals list --json`)',
    )
    .action((id: string, opts: AdminOptions & { as?: string; hash?: string }) =>
      run(io, async () => {
        const approver = approverOf(opts.as, env);
        if (opts.hash !== undefined && !ACTION_HASH.test(opts.hash)) {
          throw new Stop(EXIT.usage, '--hash must be the 64 hex digits of an action hash');
        }
        let hash = opts.hash?.toLowerCase();
        const ask = io.ask;
        if (hash === undefined && ask === undefined) {
          // Nobody to show the action to: approving now would release an action no one read.
          throw new Stop(
            EXIT.usage,
            `not approving ${safe(id)} unseen: there is no terminal to confirm on. Read the action with ` +
              '`approvals show <id>` and approve it with `approvals approve <id> --hash <action_hash>`',
          );
        }
        const t = await target(opts, env);
        if (hash === undefined && ask !== undefined) {
          const pending = await fetchOne(t, id);
          io.out(describeApproval(pending, 'approving'));
          const answer = await ask(`approve this action as ${safe(approver)}? [y/N] `);
          if (!/^\s*y(es)?\s*$/i.test(answer ?? '')) {
            throw new Stop(EXIT.failure, `not approved: ${safe(id)} is still pending`);
          }
          hash = pending.action_hash;
        }
        const r = await call(t, 'POST', `/v1/approvals/${encodeURIComponent(id)}/approve`, {
          approver,
          action_hash: hash,
        });
        finish(io, r, id, 'approved', approver);
      }),
    );

  withAdminOptions(approvals.command('deny'), env)
    .description('deny a pending action')
    .argument('<id>', 'approval id (from `approvals list`)')
    .option('--as <approver>', 'who denies (default: $USER@hostname)')
    .action((id: string, opts: AdminOptions & { as?: string }) =>
      run(io, async () => {
        const approver = approverOf(opts.as, env);
        const t = await target(opts, env);
        const r = await call(t, 'POST', `/v1/approvals/${encodeURIComponent(id)}/deny`, { approver });
        finish(io, r, id, 'denied', approver);
      }),
    );

  return approvals;
}

function withAdminOptions(cmd: Command, env: Readonly<Record<string, string | undefined>>): Command {
  return cmd
    .option(
      '--admin-url <url>',
      `admin API base URL (env ${ADMIN_ENV.url}; default ${env[ADMIN_ENV.url] ?? DEFAULT_ADMIN_URL})`,
    )
    .option('--admin-socket <path>', `admin API unix socket instead of a URL (env ${ADMIN_ENV.socket})`)
    .option('--admin-token-file <file>', `file holding the admin token (env ${ADMIN_ENV.tokenFile})`);
}

async function run(io: CliIo, body: () => Promise<void>): Promise<void> {
  try {
    await body();
    io.setExit(EXIT.ok);
  } catch (err) {
    if (err instanceof Stop) io.fail(err.exitCode, err.message);
    else if (isSidecarError(err)) io.fail(EXIT.usage, err.message);
    else throw err;
  }
}

function approverOf(as: string | undefined, env: Readonly<Record<string, string | undefined>>): string {
  const approver = as ?? defaultApprover(env);
  if (!isValidApprover(approver)) {
    throw new Stop(
      EXIT.usage,
      as === undefined
        ? 'cannot name the approver from $USER@hostname: pass --as <approver>'
        : '--as must be 1 to 128 printable characters',
    );
  }
  return approver;
}

function defaultApprover(env: Readonly<Record<string, string | undefined>>): string {
  let user = env['USER'];
  if (!user) {
    try {
      user = userInfo().username;
    } catch {
      user = '';
    }
  }
  return `${user}@${hostname()}`;
}

async function target(
  opts: AdminOptions,
  env: Readonly<Record<string, string | undefined>>,
): Promise<AdminTarget> {
  if (opts.adminUrl !== undefined && opts.adminSocket !== undefined) {
    throw new Stop(EXIT.usage, 'give --admin-url or --admin-socket, not both');
  }
  const tokenFile = opts.adminTokenFile ?? env[ADMIN_ENV.tokenFile];
  if (!tokenFile) {
    throw new Stop(EXIT.usage, `no admin token: pass --admin-token-file or set ${ADMIN_ENV.tokenFile}`);
  }
  const token = await loadAdminToken(tokenFile);

  // A flag beats the environment; at the same level the socket beats the URL.
  const socketPath = opts.adminUrl === undefined ? (opts.adminSocket ?? env[ADMIN_ENV.socket]) : undefined;
  if (socketPath) return { base: 'http://localhost', socketPath, token, where: socketPath };

  const raw = opts.adminUrl ?? env[ADMIN_ENV.url] ?? DEFAULT_ADMIN_URL;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new Stop(EXIT.usage, `not a URL: ${raw}`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password) {
    throw new Stop(EXIT.usage, `the admin URL must be http(s)://host:port without credentials: ${raw}`);
  }
  const base = `${url.origin}${url.pathname.replace(/\/+$/, '')}`;
  return { base, token, where: base };
}

async function call(
  t: AdminTarget,
  method: 'GET' | 'POST',
  path: string,
  body?: unknown,
): Promise<AdminResponse> {
  const dispatcher = new Agent({
    ...(t.socketPath ? { connect: { socketPath: t.socketPath } } : {}),
    connectTimeout: 5_000,
    headersTimeout: 10_000,
    bodyTimeout: 10_000,
  });
  try {
    const res = await request(`${t.base}${path}`, {
      method,
      dispatcher,
      headers: {
        authorization: `Bearer ${t.token}`,
        accept: 'application/json',
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body) {
      size += (chunk as Buffer).length;
      if (size > MAX_RESPONSE_BYTES) throw new Error('response too large');
      chunks.push(chunk as Buffer);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      parsed = undefined;
    }
    if (res.statusCode >= 200 && res.statusCode < 300) return { kind: 'ok', body: parsed };
    const code = (parsed as { error?: { code?: unknown } } | undefined)?.error?.code;
    return { kind: 'error', status: res.statusCode, code: typeof code === 'string' ? code : undefined };
  } catch (err) {
    const e = err as { message?: string; code?: string; cause?: { code?: string; message?: string } };
    const why = e.cause?.code ?? e.code ?? e.cause?.message ?? e.message ?? String(err);
    return { kind: 'unreachable', message: `cannot reach the admin API at ${t.where}: ${why}` };
  } finally {
    await dispatcher.close().catch(() => undefined);
  }
}

/** Turns an answer the command did not ask to handle itself into a Stop. */
function failure(r: Exclude<AdminResponse, { kind: 'ok' }>, id?: string): Stop {
  if (r.kind === 'unreachable') return new Stop(EXIT.usage, r.message);
  if (r.status === 401)
    return new Stop(EXIT.usage, 'the admin API refused the token (SIDECAR_ERR_ADMIN_UNAUTHORIZED)');
  if (id !== undefined && r.code === 'SIDECAR_ERR_APPROVAL_NOT_FOUND') return notFound(id);
  return new Stop(EXIT.failure, `the admin API answered ${r.status}${r.code ? ` ${r.code}` : ''}`);
}

function notFound(id: string): Stop {
  return new Stop(EXIT.failure, `no pending approval ${safe(id)} (decided, timed out, or never existed)`);
}

async function fetchOne(t: AdminTarget, id: string): Promise<PendingApprovalJson> {
  const pending = (await fetchPending(t)).find((p) => p.id === id);
  if (pending === undefined) throw notFound(id);
  return pending;
}

async function fetchPending(t: AdminTarget): Promise<PendingApprovalJson[]> {
  const r = await call(t, 'GET', '/v1/approvals');
  if (r.kind !== 'ok') throw failure(r);
  const list = (r.body as { approvals?: unknown } | undefined)?.approvals;
  if (!Array.isArray(list)) throw new Stop(EXIT.failure, 'the admin API sent an unexpected answer');
  return list as PendingApprovalJson[];
}

function finish(
  io: CliIo,
  r: AdminResponse,
  id: string,
  outcome: 'approved' | 'denied',
  approver: string,
): void {
  if (r.kind === 'ok') {
    const decisionId = (r.body as { decision_id?: unknown } | undefined)?.decision_id;
    io.out(`${outcome} ${safe(id)} (decision ${safe(String(decisionId))}) as ${safe(approver)}`);
    return;
  }
  if (r.kind === 'error' && r.code === 'SIDECAR_ERR_REQUEST_MALFORMED' && outcome === 'approved') {
    // The CLI sends well-formed requests with a checked approver, so this is the action hash not matching.
    throw new Stop(EXIT.failure, `refused: the pending action ${safe(id)} does not match the approved hash`);
  }
  throw failure(r, id);
}

// Actions come from the agent: everything printed from one goes through `safe` (io.ts terminalSafe), so it cannot
// move the cursor, recolour the terminal or reorder text.

/** The whole action (the approver's view: token-shaped secrets hidden) with its hash, one member per line. */
function describeApproval(p: PendingApprovalJson, title: 'approval' | 'approving'): string {
  return [
    `${title} ${safe(p.id)} (decision ${safe(p.decision_id)}, agent ${safe(p.agent)}, rule ${safe(p.rule)}, expires ${safe(p.expires_at)})`,
    `action (sha256 ${safe(p.action_hash)}):`,
    terminalSafeJson(p.action, 2),
  ].join('\n');
}

const ACTION_COLUMN = 80;
const CUT_MARK = '… ';

/** The action on one line, cut after ACTION_COLUMN characters with a visible count of what is not shown. */
function actionCell(p: PendingApprovalJson): { readonly text: string; readonly cut: boolean } {
  const chars = [...terminalSafeJson(p.action)];
  if (chars.length <= ACTION_COLUMN) return { text: chars.join(''), cut: false };
  const hidden = chars.length - ACTION_COLUMN;
  return { text: `${chars.slice(0, ACTION_COLUMN).join('')}${CUT_MARK}(+${hidden} chars)`, cut: true };
}

/**
 * One row per pending approval: id, agent, rule, expiry, hash prefix, and the action on one line, cut after
 * ACTION_COLUMN characters and then marked `… (+N chars)`. Not enough to approve on: `show` prints the whole action.
 */
export function formatApprovalTable(pending: readonly PendingApprovalJson[]): string {
  const rows = pending.map((p) => [
    safe(p.id),
    safe(p.agent),
    safe(p.rule),
    safe(p.expires_at),
    safe(p.action_hash.slice(0, 12)),
    actionCell(p).text,
  ]);
  const header = ['ID', 'AGENT', 'RULE', 'EXPIRES', 'HASH', 'ACTION'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows]
    .map((r) =>
      r
        .map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
