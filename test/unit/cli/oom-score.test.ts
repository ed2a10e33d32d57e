// Who the kernel's OOM killer takes when the sidecar's container runs short of memory: the tools exec'd beside the
// sidecar (every CLI command but `run`) raise their own oom_score_adj to 1000; `run` keeps the score it was given.
// The container-level proof (six memory-hungry probes, the sidecar survives) is in test/integration/isolation.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, startSidecarProcess } from '../../support/sidecar-process.ts';

const scoreOf = (pid: number | 'self') => readFileSync(`/proc/${pid}/oom_score_adj`, 'utf8').trim();
// Linux only; and a runner already at 1000 would hand that score down and prove nothing.
const linux = existsSync('/proc/self/oom_score_adj') && scoreOf('self') !== '1000';

let dir: string;
let policyFile: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'oom-score-'));
  policyFile = join(dir, 'policy.yaml');
  await writeFile(
    policyFile,
    'agent: tester\nrules:\n  - name: reads\n    action: file_read\n    effect: ALLOW\n',
  );
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe.runIf(linux)('oom_score_adj of the CLI', () => {
  it('a tool command (eval, reading stdin) offers itself first: 1000', async () => {
    const proc = spawn(process.execPath, [CLI, 'eval', '--policy', policyFile, '--actions', '-'], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: proc.stdout });
    const first = once(lines, 'line');
    // One answered action: the command is past start-up and still running, waiting for the next line.
    proc.stdin.write('{"type":"file_read","path":"/data/x"}\n');
    expect(JSON.parse(String((await first)[0]))).toMatchObject({ effect: 'ALLOW' });
    expect(scoreOf(proc.pid!)).toBe('1000');
    proc.stdin.end();
    const [code] = (await once(proc, 'exit')) as [number | null];
    expect(code).toBe(0);
  });

  it('`run` keeps the score its parent gave it', async () => {
    const sidecar = await startSidecarProcess(['--policy', policyFile, '--audit-dir', join(dir, 'audit')]);
    try {
      expect(scoreOf(sidecar.proc.pid!)).toBe(scoreOf('self'));
      expect(scoreOf(sidecar.proc.pid!)).not.toBe('1000');
    } finally {
      await sidecar.stop();
    }
  });
});
