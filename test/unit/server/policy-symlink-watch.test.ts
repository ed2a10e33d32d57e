// Found by review, round 7, and fixed by polling the path alongside the directory watch (and one read at watch start): the watcher watches dirname(--policy) only. When the policy path is a
// symlink to a file elsewhere, or goes through a directory symlink that a deploy tool swaps (git-sync's
// `current -> rev-…`, the usual "atomic directory swap"), a change of the policy the path names is never seen:
// the sidecar keeps serving the old policy with no reload, no refusal, no log line. `--no-watch`'s help promises
// reloads "when the policy file changes"; docs/kubernetes.md relies on the watcher for rollout.
// The Kubernetes ConfigMap layout (`policy.yaml -> ..data/policy.yaml`, `..data` swapped in the same directory)
// is the control: it is seen.
import { mkdir, mkdtemp, rename, rm, symlink, writeFile } from 'node:fs/promises';
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

async function start(policyPath: string): Promise<() => string | undefined> {
  sidecar = await startSidecar(
    {
      policyPath,
      listen: { host: '127.0.0.1', port: 0 },
      auditDir: join(dir as string, 'audit'),
      watchPolicy: true,
    },
    pino({ level: 'silent' }),
  );
  expect(sidecar.policies.current.evaluate(action).effect).toBe('ALLOW');
  return () => sidecar?.policies.current.evaluate(action).effect;
}

/** write-then-rename, as editors, config tools and `kubectl cp`-style updaters do. */
async function replaceAtomically(path: string, text: string): Promise<void> {
  await writeFile(`${path}.tmp`, text);
  await rename(`${path}.tmp`, path);
}

it('--policy is a symlink to a file in another directory: a change of that file is picked up', async () => {
  dir = await mkdtemp(join(tmpdir(), 'r7-cfg-symlink-'));
  await mkdir(join(dir, 'store'));
  await mkdir(join(dir, 'etc'));
  const target = join(dir, 'store', 'tester.yaml');
  await writeFile(target, policy('ALLOW'));
  const policyPath = join(dir, 'etc', 'policy.yaml');
  await symlink(target, policyPath);
  const effect = await start(policyPath);
  await replaceAtomically(target, policy('DENY'));
  expect(await until(() => effect() === 'DENY')).toBe(true);
});

it('--policy goes through a directory symlink that is swapped (git-sync style): the new revision is picked up', async () => {
  dir = await mkdtemp(join(tmpdir(), 'r7-cfg-symlink-'));
  await mkdir(join(dir, 'rev-1'));
  await writeFile(join(dir, 'rev-1', 'policy.yaml'), policy('ALLOW'));
  await symlink(join(dir, 'rev-1'), join(dir, 'current'));
  const effect = await start(join(dir, 'current', 'policy.yaml'));
  await mkdir(join(dir, 'rev-2'));
  await writeFile(join(dir, 'rev-2', 'policy.yaml'), policy('DENY'));
  await symlink(join(dir, 'rev-2'), join(dir, 'current.tmp'));
  await rename(join(dir, 'current.tmp'), join(dir, 'current'));
  expect(await until(() => effect() === 'DENY')).toBe(true);
});

it('control: the Kubernetes ConfigMap layout (..data swapped in the same directory) is picked up', async () => {
  dir = await mkdtemp(join(tmpdir(), 'r7-cfg-symlink-'));
  const mount = join(dir, 'mount');
  await mkdir(join(mount, '..2024_01'), { recursive: true });
  await writeFile(join(mount, '..2024_01', 'policy.yaml'), policy('ALLOW'));
  await symlink('..2024_01', join(mount, '..data'));
  await symlink('..data/policy.yaml', join(mount, 'policy.yaml'));
  const effect = await start(join(mount, 'policy.yaml'));
  await mkdir(join(mount, '..2024_02'));
  await writeFile(join(mount, '..2024_02', 'policy.yaml'), policy('DENY'));
  await symlink('..2024_02', join(mount, '..data_tmp'));
  await rename(join(mount, '..data_tmp'), join(mount, '..data'));
  await rm(join(mount, '..2024_01'), { recursive: true });
  expect(await until(() => effect() === 'DENY')).toBe(true);
});
