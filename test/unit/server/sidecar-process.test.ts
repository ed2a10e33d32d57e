// The real `agent-sidecar run` process: startup refusals, the action API, approvals, metrics, hot reload, shutdown.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type RunningSidecar, runCli, startSidecarProcess } from '../../support/sidecar-process.ts';

const POLICY = `agent: tester
rules:
  - name: allow-reads
    action: file_read
    conditions: { path: { starts_with: /data } }
    effect: ALLOW
  - name: deploy-needs-approval
    action: shell_exec
    conditions: { command: { starts_with: "npm run deploy" } }
    effect: REQUIRE_APPROVAL
  - name: any-tool
    action: tool_call
    effect: ALLOW
`;

let dir: string;
let policyFile: string;
let tokenFile: string;
let sidecar: RunningSidecar | undefined;
const TOKEN = 'test-admin-token-0123456789abcdef0123456789';

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sidecar-proc-'));
  policyFile = join(dir, 'policy.yaml');
  tokenFile = join(dir, 'admin.token');
  await writeFile(policyFile, POLICY);
  await writeFile(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
});

afterEach(async () => {
  await sidecar?.stop('SIGKILL');
  sidecar = undefined;
  await rm(dir, { recursive: true, force: true });
});

const start = (extra: string[] = []) =>
  startSidecarProcess([
    '--policy',
    policyFile,
    '--audit-dir',
    join(dir, 'audit'),
    '--admin-token-file',
    tokenFile,
    ...extra,
  ]);

async function evaluate(s: RunningSidecar, body: string) {
  const res = await fetch(`${s.url}/v1/evaluate`, {
    method: 'POST',
    body,
    headers: { 'content-type': 'application/json' },
  });
  return {
    status: res.status,
    header: res.headers.get('x-sidecar-decision-id'),
    body: (await res.json()) as Record<string, unknown>,
  };
}

async function auditLines(): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(join(dir, 'audit', 'tester.audit.jsonl'), 'utf8');
  return text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe('startup refusals (exit 2, one clear error)', () => {
  it.each([
    {
      note: 'invalid policy',
      setup: async () =>
        writeFile(
          policyFile,
          'agent: tester\nrules:\n  - name: x\n    action: file_read\n    conditons: {}\n    effect: ALLOW\n',
        ),
      args: () => ['--audit-dir', join(dir, 'audit')],
      want: /SIDECAR_ERR_POLICY_INVALID: .*policy\.yaml:5:5: rules\[0\]: unknown key "conditons"/,
    },
    {
      note: 'audit dir not writable (its parent is a file)',
      setup: async () => writeFile(join(dir, 'not-a-dir'), ''),
      args: () => ['--audit-dir', join(dir, 'not-a-dir', 'audit')],
      want: /SIDECAR_ERR_AUDIT_DIR_UNWRITABLE/,
    },
    {
      note: 'bad listen address',
      setup: async () => undefined,
      args: () => ['--audit-dir', join(dir, 'audit'), '--listen', 'nowhere'],
      want: /--listen must be HOST:PORT/,
    },
  ])('$note', async ({ setup, args, want }) => {
    await setup();
    const r = await runCli(['run', '--policy', policyFile, ...args()]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(want);
    expect(r.stderr).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('port already taken', async () => {
    const blocker = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => blocker.once('listening', r));
    const port = (blocker.address() as { port: number }).port;
    const r = await runCli([
      'run',
      '--policy',
      policyFile,
      '--audit-dir',
      join(dir, 'audit'),
      '--listen',
      `127.0.0.1:${port}`,
    ]);
    blocker.close();
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/SIDECAR_ERR_LISTEN_FAILED: cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/);
  });
});

describe('running sidecar', () => {
  it('answers health and readiness', async () => {
    sidecar = await start();
    expect((await fetch(`${sidecar.url}/healthz`)).status).toBe(200);
    expect((await fetch(`${sidecar.url}/readyz`)).status).toBe(200);
    const nf = await fetch(`${sidecar.url}/admin-tools`);
    expect(nf.status).toBe(404);
    expect(await nf.json()).toEqual({ error: { code: 'SIDECAR_ERR_NOT_FOUND', message: 'Not found.' } });
  });

  it.each([
    {
      note: 'allowed read',
      body: '{"type":"file_read","path":"/data/a.csv"}',
      effect: 'ALLOW',
      reason: 'matched',
    },
    {
      note: 'traversal',
      body: '{"type":"file_read","path":"/data/../etc/passwd"}',
      effect: 'DENY',
      reason: 'no_rule_matched',
    },
    {
      note: 'another agent',
      body: '{"type":"file_read","path":"/data/a","agent":"admin"}',
      effect: 'DENY',
      reason: 'identity_mismatch',
    },
    { note: 'not JSON', body: 'rm -rf /', effect: 'DENY', reason: 'malformed_action' },
    {
      note: 'duplicate keys',
      body: '{"type":"file_read","path":"/etc/passwd","path":"/data/a"}',
      effect: 'DENY',
      reason: 'malformed_action',
    },
  ])('/v1/evaluate: $note → $effect, audited with its reason', async ({ body, effect, reason }) => {
    sidecar = await start();
    const r = await evaluate(sidecar, body);
    expect(r.status).toBe(200);
    expect(r.body['effect']).toBe(effect);
    expect(r.header).toBe(r.body['decision_id']);
    expect(JSON.stringify(r.body)).not.toMatch(/rule|reason/);
    const entry = (await auditLines()).find((e) => e['decision_id'] === r.body['decision_id']);
    expect(entry?.['effect']).toBe(effect);
    expect(entry?.['reason']).toBe(reason);
  });

  it('redacts secrets in the audit log and the operational log', async () => {
    sidecar = await start();
    await evaluate(
      sidecar,
      '{"type":"tool_call","tool":"lookup","args":{"api_key":"sk-live-SECRET","q":"x"}}',
    );
    const text = await readFile(join(dir, 'audit', 'tester.audit.jsonl'), 'utf8');
    expect(text).not.toContain('sk-live-SECRET');
    expect(text).toContain('[REDACTED]');
    expect(JSON.stringify(sidecar.logs)).not.toContain('sk-live-SECRET');
  });

  it('holds REQUIRE_APPROVAL until approved through the CLI; an approval cannot be replayed', async () => {
    sidecar = await start();
    const env = { SIDECAR_ADMIN_URL: sidecar.adminUrl, SIDECAR_ADMIN_TOKEN_FILE: tokenFile };
    const pending = evaluate(sidecar, '{"type":"shell_exec","command":"npm run deploy"}');
    let list = { code: 0 as number | null, stdout: '' };
    for (let i = 0; i < 50; i++) {
      list = await runCli(['approvals', 'list', '--json'], env);
      if (list.stdout.includes('deploy-needs-approval')) break;
      await sleep(100);
    }
    const [item] = JSON.parse(list.stdout) as Array<{ id: string; action_hash: string }>;
    expect(item).toBeDefined();
    const { id, action_hash: hash } = item as { id: string; action_hash: string };
    // Not a terminal: without --hash, approve refuses rather than approve an action nobody was shown.
    const blind = await runCli(['approvals', 'approve', id, '--as', 'alice@ops'], env);
    expect(blind.code).toBe(2);
    expect(blind.stderr).toContain('--hash');
    const approve = await runCli(['approvals', 'approve', id, '--as', 'alice@ops', '--hash', hash], env);
    expect(approve.code).toBe(0);
    expect((await pending).body['effect']).toBe('ALLOW');
    const replay = await runCli(['approvals', 'approve', id, '--as', 'alice@ops', '--hash', hash], env);
    expect(replay.code).toBe(1);
    const final = (await auditLines()).filter((e) => e['kind'] === 'approval');
    expect(final).toHaveLength(1);
    expect(final[0]?.['extra']).toMatchObject({ approver: 'alice@ops' });
  });

  it('serves Prometheus metrics on the admin listener, only with the token', async () => {
    sidecar = await start();
    await evaluate(sidecar, '{"type":"file_read","path":"/data/a.csv"}');
    expect((await fetch(`${sidecar.adminUrl}/metrics`)).status).toBe(401);
    const res = await fetch(`${sidecar.adminUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const text = await res.text();
    expect(text).toMatch(
      /sidecar_decisions_total\{kind="evaluate",action="file_read",effect="ALLOW",reason="matched"\} 1/,
    );
  });

  it('hot-reloads a valid policy (new digest in the audit) and refuses an invalid one (old keeps serving)', async () => {
    sidecar = await start();
    const first = await evaluate(sidecar, '{"type":"file_read","path":"/srv/x"}');
    expect(first.body['effect']).toBe('DENY');
    await writeFile(policyFile, POLICY.replace('starts_with: /data', 'starts_with: /srv'));
    sidecar.proc.kill('SIGHUP');
    let second = first;
    for (let i = 0; i < 50 && second.body['effect'] !== 'ALLOW'; i++) {
      await sleep(100);
      second = await evaluate(sidecar, '{"type":"file_read","path":"/srv/x"}');
    }
    expect(second.body['effect']).toBe('ALLOW');
    await writeFile(policyFile, 'agent: tester\nrules: {}\n');
    sidecar.proc.kill('SIGHUP');
    await sleep(500);
    expect((await evaluate(sidecar, '{"type":"file_read","path":"/srv/y"}')).body['effect']).toBe('ALLOW');
    const digests = new Set((await auditLines()).map((e) => e['policy_digest']));
    expect(digests.size).toBe(2);
    const metrics = await (
      await fetch(`${sidecar.adminUrl}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } })
    ).text();
    expect(metrics).toMatch(/sidecar_policy_reloads_total\{result="rejected"\} [1-9]/);
  });

  it('on SIGTERM finishes in-flight requests, exits 0, and leaves a chain that verifies', async () => {
    sidecar = await start(['--approval-timeout', '60']);
    const held = evaluate(sidecar, '{"type":"shell_exec","command":"npm run deploy"}');
    await sleep(300);
    const code = await sidecar.stop('SIGTERM');
    expect((await held).body['effect']).toBe('DENY');
    expect(code).toBe(0);
    const verify = await runCli(['audit', 'verify', join(dir, 'audit', 'tester.audit.jsonl')]);
    expect(verify.stderr).toBe('');
    expect(verify.code).toBe(0);
    const reasons = (await auditLines()).map((e) => e['reason']);
    expect(reasons).toContain('approval_cancelled');
  });
});
