// Spawns the real `agent-sidecar run` process for tests and reads its ports from the "sidecar ready" log line.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';

export const CLI = resolve(import.meta.dirname, '../../bin/agent-sidecar.js');
const READY_TIMEOUT_MS = 15_000;

export interface RunningSidecar {
  readonly proc: ChildProcess;
  readonly url: string;
  readonly adminUrl: string | undefined;
  /** Every JSON log line so far. */
  readonly logs: Array<Record<string, unknown>>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function startSidecarProcess(
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): Promise<RunningSidecar> {
  const proc = spawn(
    process.execPath,
    [CLI, 'run', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', ...args],
    {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  proc.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const ready = new Promise<Record<string, unknown>>((res, rej) => {
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry['msg'] === 'sidecar ready') res(entry);
      } catch {
        // not a log line
      }
    });
    proc.once('exit', (code) => rej(new Error(`sidecar exited ${code}: ${stderr}`)));
  });
  // A sidecar that never becomes ready must not outlive the test that started it.
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_res, rej) => {
    timer = setTimeout(() => {
      proc.kill('SIGKILL');
      rej(new Error(`sidecar not ready within ${READY_TIMEOUT_MS} ms: ${stderr}`));
    }, READY_TIMEOUT_MS);
  });
  const entry = await Promise.race([ready, timeout]).finally(() => clearTimeout(timer));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    if (proc.exitCode !== null) return proc.exitCode;
    proc.kill(signal);
    const [code] = (await once(proc, 'exit')) as [number | null];
    return code;
  };
  return {
    proc,
    url: `http://${String(entry['listen'])}`,
    adminUrl: typeof entry['admin'] === 'string' ? String(entry['admin']) : undefined,
    logs,
    stop,
  };
}

/** Runs the CLI to completion. */
export async function runCli(args: readonly string[], env: NodeJS.ProcessEnv = {}) {
  const proc = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  proc.stdout.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  proc.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const [code] = (await once(proc, 'exit')) as [number | null];
  return { code, stdout, stderr };
}
