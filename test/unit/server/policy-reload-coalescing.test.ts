// Hot reload: a SIGHUP sent after the policy file was rewritten ends with the new file in force (and its digest in
// the audit), even when it arrives while an earlier reload is still loading the previous text: a trigger during a
// reload queues one more.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { sha256Hex } from '../../../sidecar/policy/canonical.ts';

// Holds the first reload after it has read the file, so a second trigger can arrive while it is in flight.
const gate = vi.hoisted(() => {
  let release: () => void = () => {};
  const state = { armed: false, read: Promise.withResolvers<void>() };
  return {
    state,
    arm() {
      return new Promise<void>((r) => {
        release = r;
      });
    },
    release: () => release(),
  };
});

vi.mock('../../../sidecar/policy-file.ts', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../../sidecar/policy-file.ts')>();
  let held: Promise<void> | undefined;
  return {
    ...real,
    tryLoadPolicy: async (path: string) => {
      const result = await real.tryLoadPolicy(path);
      if (gate.state.armed) {
        gate.state.armed = false;
        held = gate.arm();
        gate.state.read.resolve();
        await held;
      }
      return result;
    },
  };
});

const { PolicyHolder } = await import('../../../sidecar/server/policy-holder.ts');
const { createMetrics } = await import('../../../sidecar/server/metrics.ts');

const policy = (cmd: string) => `
agent: tester
rules:
  - name: r
    action: shell_exec
    conditions: { command: { equals: "${cmd}" } }
    effect: ALLOW
`;

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('policy reload triggered during a reload', () => {
  it('applies a file written before the second trigger', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'policy-reload-'));
    dirs.push(dir);
    const file = join(dir, 'policy.yaml');
    await writeFile(file, policy('v1'));
    const holder = await PolicyHolder.load(file, pino({ level: 'silent' }), createMetrics());

    await writeFile(file, policy('v2'));
    gate.state.armed = true;
    const first = holder.reload('watch'); // reads v2, then is held
    await gate.state.read.promise;

    await writeFile(file, policy('v3')); // the operator writes v3 ...
    const second = holder.reload('SIGHUP'); // ... and then sends SIGHUP
    gate.release();
    await Promise.all([first, second]);

    const names: Record<string, string> = {
      [sha256Hex(policy('v1'))]: 'v1',
      [sha256Hex(policy('v2'))]: 'v2',
      [sha256Hex(policy('v3'))]: 'v3',
    };
    expect(names[holder.current.digest], 'policy in force after both triggers').toBe('v3');
  });
});
