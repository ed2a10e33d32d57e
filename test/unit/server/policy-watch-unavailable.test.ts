// Found by review, round 7, and fixed by polling the path alongside the directory watch (and one read at watch start): when fs.watch cannot be set up (ENOSPC: the node's inotify watch or
// instance limit is reached, common on busy Kubernetes nodes where fs.inotify.max_user_instances defaults to 128),
// PolicyHolder.watch logs one warning and the sidecar starts and reports ready anyway. From then on no change of
// the policy file is ever applied (docs/kubernetes.md relies on the watcher for policy rollout): the sidecar
// serves the old policy indefinitely, healthy, with no retry and no fallback. Expected: a change is still picked
// up (a polling fallback such as fs.watchFile / a periodic digest check), or the sidecar refuses to start.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, expect, it, vi } from 'vitest';
import { until, WATCHED_ACTION, watchedPolicy } from './watched-policy.ts';

vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const watch = () => {
    throw Object.assign(new Error('ENOSPC: System limit for number of file watchers reached, watch'), {
      code: 'ENOSPC',
    });
  };
  return { ...real, watch, default: { ...real, watch } };
});

const { startSidecar } = await import('../../../sidecar/server/sidecar.ts');
type Sidecar = Awaited<ReturnType<typeof startSidecar>>;

const policy = watchedPolicy;
const action = WATCHED_ACTION;

let dir: string | undefined;
let sidecar: Sidecar | undefined;
afterEach(async () => {
  await sidecar?.close(100);
  sidecar = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
});

it('with the watcher unavailable (ENOSPC), a changed policy is still picked up, or startup is refused', async () => {
  dir = await mkdtemp(join(tmpdir(), 'r7-cfg-watch-unavailable-'));
  const policyPath = join(dir, 'policy.yaml');
  await writeFile(policyPath, policy('ALLOW'));
  let started: Sidecar | Error;
  try {
    started = await startSidecar(
      { policyPath, listen: { host: '127.0.0.1', port: 0 }, auditDir: join(dir, 'audit'), watchPolicy: true },
      pino({ level: 'silent' }),
    );
  } catch (err) {
    started = err as Error;
  }
  if (started instanceof Error) return; // refusing to start without the promised reloads is fail closed
  sidecar = started;
  await writeFile(policyPath, policy('DENY'));
  expect(await until(() => sidecar?.policies.current.evaluate(action).effect === 'DENY')).toBe(true);
});
