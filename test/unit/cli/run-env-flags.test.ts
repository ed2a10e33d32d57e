// Boolean SIDECAR_* variables mean what they say: SIDECAR_NO_AUDIT_FSYNC=false (or 0) leaves audit fsync on, and
// SIDECAR_NO_WATCH=false leaves policy watching on. (commander alone counts any value as "set".)
import { PassThrough } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';

const captured: Array<Record<string, unknown>> = [];
vi.mock('../../../sidecar/server/sidecar.ts', () => ({
  startSidecar: vi.fn(async (config: Record<string, unknown>) => {
    captured.push(config);
    return { close: async () => undefined, policies: { reload: async () => undefined } };
  }),
}));

const { runCommand } = await import('../../../sidecar/cli/run-command.ts');

afterEach(() => {
  captured.length = 0;
  delete process.env['SIDECAR_NO_AUDIT_FSYNC'];
  delete process.env['SIDECAR_NO_WATCH'];
  process.removeAllListeners('SIGHUP');
  for (const sig of ['SIGTERM', 'SIGINT'] as const)
    for (const l of process.listeners(sig)) if (String(l).includes("stop('SIG")) process.off(sig, l);
});

async function configFor(env: Partial<Record<string, string>>) {
  for (const [k, v] of Object.entries(env)) if (v !== undefined) process.env[k] = v;
  const errs: string[] = [];
  const io = {
    out: () => undefined,
    err: (l: string) => errs.push(l),
    stdin: new PassThrough(),
    setExit: () => undefined,
    fail: (_c: number, m: string) => errs.push(m),
  };
  await runCommand(io)
    .exitOverride()
    .parseAsync(['--policy', '/nonexistent.yaml', '--log-level', 'silent'], { from: 'user' });
  expect(errs).toEqual([]);
  return captured[0] as { auditSync: string; watchPolicy: boolean };
}

describe('boolean environment variables mean what they say', () => {
  it.each([
    { env: { SIDECAR_NO_AUDIT_FSYNC: 'false' }, field: 'auditSync', want: 'interval' },
    { env: { SIDECAR_NO_AUDIT_FSYNC: '0' }, field: 'auditSync', want: 'interval' },
    { env: { SIDECAR_NO_AUDIT_FSYNC: 'true' }, field: 'auditSync', want: 'never' },
    { env: { SIDECAR_NO_WATCH: 'false' }, field: 'watchPolicy', want: true },
    { env: { SIDECAR_NO_WATCH: '1' }, field: 'watchPolicy', want: false },
    { env: {}, field: 'watchPolicy', want: true },
  ])('$env → $field $want', async ({ env, field, want }) => {
    const config = (await configFor(env)) as unknown as Record<string, unknown>;
    expect(config[field]).toBe(want);
  });
});
