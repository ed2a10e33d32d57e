// `agent-sidecar run` refuses bad flag and environment values before it serves (exit 2, one line), never starts
// anyway: every value is checked before a listener opens.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CLI } from '../../support/sidecar-process.ts';

let dir: string;
let policyFile: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'run-refusals-'));
  policyFile = join(dir, 'policy.yaml');
  await writeFile(
    policyFile,
    'agent: tester\nrules:\n  - name: r\n    action: file_read\n    conditions: { path: { starts_with: /data } }\n    effect: ALLOW\n',
  );
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Starts `run`; resolves with how it ended: exited (code, stderr) or became ready (then it is killed). */
function startOrRefuse(args: string[], env: NodeJS.ProcessEnv = {}) {
  const proc = spawn(
    process.execPath,
    [
      CLI,
      'run',
      '--policy',
      policyFile,
      '--audit-dir',
      join(dir, 'audit'),
      '--listen',
      '127.0.0.1:0',
      '--admin-listen',
      '127.0.0.1:0',
      ...args,
    ],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  proc.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return new Promise<{ outcome: string; code: number | null; stderr: string }>((resolve) => {
    createInterface({ input: proc.stdout }).on('line', (line) => {
      if (line.includes('"sidecar ready"')) {
        proc.kill('SIGKILL');
        resolve({ outcome: 'served', code: null, stderr });
      }
    });
    proc.once('exit', (code) => resolve({ outcome: 'refused', code, stderr }));
  });
}

describe('run refuses invalid values before serving', () => {
  it.each([
    { note: '--shutdown-grace abc', args: ['--shutdown-grace', 'abc'], env: {} },
    { note: '--shutdown-grace -1', args: ['--shutdown-grace', '-1'], env: {} },
    { note: 'SIDECAR_SHUTDOWN_GRACE=garbage', args: [], env: { SIDECAR_SHUTDOWN_GRACE: 'garbage' } },
    // Longer than a timer can hold (about 24.8 days): it would fire at once and deny every approval unasked.
    { note: '--approval-timeout 2592000 (30 days)', args: ['--approval-timeout', '2592000'], env: {} },
    {
      note: '--approval-timeout 0.0001 (under a millisecond)',
      args: ['--approval-timeout', '0.0001'],
      env: {},
    },
    { note: 'SIDECAR_NO_AUDIT_FSYNC=maybe', args: [], env: { SIDECAR_NO_AUDIT_FSYNC: 'maybe' } },
    { note: 'SIDECAR_NO_WATCH=sometimes', args: [], env: { SIDECAR_NO_WATCH: 'sometimes' } },
    {
      note: '--no-audit-fsync against an explicit --audit-sync always',
      args: ['--no-audit-fsync', '--audit-sync', 'always'],
      env: {},
    },
  ])('$note: exit 2 with one line, never "sidecar ready"', async ({ args, env }) => {
    const r = await startOrRefuse(args, env);
    expect({ outcome: r.outcome, code: r.code }).toEqual({ outcome: 'refused', code: 2 });
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
