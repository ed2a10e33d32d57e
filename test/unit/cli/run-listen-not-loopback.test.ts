// Found by review, round 7 (fixed: a non-loopback agent listener is warned about at startup): `run --listen 0.0.0.0:PORT` (or SIDECAR_LISTEN=0.0.0.0:…) starts silently.
// The agent listener has no authentication: whoever reaches it acts as this agent (its policy, its model key
// injected by the gateway, its signed tool context, the forward proxy past the lockdown). Every shipped setup
// uses 127.0.0.1 and the threat model lists "the image's default listen address was 0.0.0.0" as a fixed bug,
// yet the flag takes any address without a refusal, a warning, or a word in the docs. A wildcard or
// non-loopback agent listener must at least be refused or loudly warned about at startup.

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { CLI, type RunningSidecar, startSidecarProcess } from '../../support/sidecar-process.ts';

let dir: string | undefined;
let running: RunningSidecar | undefined;
afterEach(async () => {
  await running?.stop('SIGKILL');
  running = undefined;
  if (dir) await rm(dir, { recursive: true, force: true });
});

it('an agent listener on 0.0.0.0 is refused, or warned about at startup', async () => {
  dir = await mkdtemp(join(tmpdir(), 'r7-cfg-listen-any-'));
  const policyFile = join(dir, 'policy.yaml');
  await writeFile(
    policyFile,
    'agent: tester\nrules:\n  - name: r\n    action: file_read\n    conditions: { path: { starts_with: /data } }\n    effect: ALLOW\n',
  );
  // Refused at start is one acceptable outcome: check it first without holding a port.
  const probe = spawn(
    process.execPath,
    [CLI, 'run', '--policy', policyFile, '--audit-dir', join(dir, 'audit-probe'), '--listen', '0.0.0.0:0'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let refused = false;
  let served = false;
  probe.stdout.on('data', (d: Buffer) => {
    if (d.toString().includes('"sidecar ready"') && !served) {
      served = true;
      probe.kill('SIGKILL');
    }
  });
  const [code] = (await once(probe, 'exit')) as [number | null];
  refused = !served && code === 2;
  if (refused) return;

  running = await startSidecarProcess([
    '--policy',
    policyFile,
    '--audit-dir',
    join(dir, 'audit'),
    '--listen',
    '0.0.0.0:0',
  ]);
  // The ready line by name: lines logged after it (in the same read, or before this line runs) follow it in `logs`.
  const ready = running.logs.find((l) => l['msg'] === 'sidecar ready');
  expect(String(ready?.['listen'])).toMatch(/^0\.0\.0\.0:/);
  const warned = running.logs.filter(
    (l) => Number(l['level']) >= 40 && /listen|0\.0\.0\.0|loopback|network/i.test(JSON.stringify(l)),
  );
  expect(warned.map((l) => l['msg'])).not.toEqual([]);
});
