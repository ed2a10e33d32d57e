// Found by review, round 7, and fixed by polling the path alongside the directory watch (and one read at watch start): a policy file rewritten while the sidecar is still starting (after the
// policy was read, before the watcher exists: gateways connecting to MCP upstreams, listeners opening) is never
// picked up. The watcher only sees changes made after it starts, so the sidecar serves the text it read at the
// start until the next, unrelated change: a stale policy with no signal at all (no reload, no refusal logged).
// `mounts` runs inside that window, exactly where the MCP gateway's upstream handshake (up to
// startup_timeout_ms, default 10 s) runs in a real `run`.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, expect, it } from 'vitest';
import { type Sidecar, startSidecar } from '../../../sidecar/server/sidecar.ts';
import { until, WATCHED_ACTION, watchedPolicy } from './watched-policy.ts';

const policy = watchedPolicy;
const action = WATCHED_ACTION;

let dir: string | undefined;
let sidecar: Sidecar | undefined;
afterEach(async () => {
  await sidecar?.close(100);
  sidecar = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

it('a policy rewritten during startup (after it was read, before the watcher started) is picked up', async () => {
  dir = await mkdtemp(join(tmpdir(), 'r7-cfg-startup-window-'));
  const policyPath = join(dir, 'policy.yaml');
  await writeFile(policyPath, policy('ALLOW'));
  sidecar = await startSidecar(
    {
      policyPath,
      listen: { host: '127.0.0.1', port: 0 },
      auditDir: join(dir, 'audit'),
      watchPolicy: true,
      // Runs after PolicyHolder.load and before policies.watch(): the operator's lockdown lands here.
      mounts: async () => {
        await writeFile(policyPath, policy('DENY'));
        return [];
      },
    },
    pino({ level: 'silent' }),
  );
  const effect = () => sidecar?.policies.current.evaluate(action).effect;
  expect(await until(() => effect() === 'DENY')).toBe(true);
});

it('control: the same rewrite made just after startup is picked up by the watcher', async () => {
  dir = await mkdtemp(join(tmpdir(), 'r7-cfg-startup-window-'));
  const policyPath = join(dir, 'policy.yaml');
  await writeFile(policyPath, policy('ALLOW'));
  sidecar = await startSidecar(
    { policyPath, listen: { host: '127.0.0.1', port: 0 }, auditDir: join(dir, 'audit'), watchPolicy: true },
    pino({ level: 'silent' }),
  );
  await writeFile(policyPath, policy('DENY'));
  const effect = () => sidecar?.policies.current.evaluate(action).effect;
  expect(await until(() => effect() === 'DENY')).toBe(true);
});
