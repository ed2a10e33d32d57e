// The compose stacks from a test's side: the probe inside a container, and what the host's Docker sees of them.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { StartedTestContainer } from 'testcontainers';

const run = promisify(execFile);

/** One line of the probe's output (agents/probe-agent/probe.ts). */
export interface ProbeResult {
  readonly ok: boolean;
  readonly check: string;
  readonly error?: string;
  readonly status?: number;
  readonly decisionId?: string | null;
  readonly body?: string;
  readonly [key: string]: unknown;
}

/** Where the probe lives: the agent image runs it as its entrypoint; the sidecar image ships it for its self-check. */
const PROBE = {
  agent: ['probe'],
  sidecar: ['node', '/usr/local/lib/agent-sidecar/probe.ts'],
} as const;

export interface ProbeOptions {
  /** Which image the container runs. */
  readonly image: keyof typeof PROBE;
  /** Exec as this user instead of the container's. */
  readonly user?: string;
  /** How long a connection or lookup may take before the probe calls it failed (default 3000 ms). */
  readonly timeoutMs?: number;
}

export async function probeIn(
  container: StartedTestContainer,
  args: readonly string[],
  opts: ProbeOptions = { image: 'agent' },
): Promise<ProbeResult> {
  const r = await container.exec([...PROBE[opts.image], ...args], {
    ...(opts.user ? { user: opts.user } : {}),
    ...(opts.timeoutMs ? { env: { PROBE_TIMEOUT_MS: String(opts.timeoutMs) } } : {}),
  });
  const line = r.stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(line) as ProbeResult;
  } catch {
    throw new Error(`probe ${args.join(' ')}: no JSON line (exit ${r.exitCode}): ${r.output}`);
  }
}

/** The host's docker CLI: for what testcontainers does not wrap (kill, cp, logs, inspect). */
export async function docker(...args: string[]): Promise<string> {
  const { stdout } = await run('docker', args, { maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

/** Every log line of a container that parses as a JSON object. */
export async function jsonLogLines(containerId: string): Promise<Array<Record<string, unknown>>> {
  const { stdout, stderr } = await run('docker', ['logs', containerId], { maxBuffer: 16 * 1024 * 1024 });
  const lines: Array<Record<string, unknown>> = [];
  for (const line of `${stdout}\n${stderr}`.split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // Not a JSON line.
    }
  }
  return lines;
}

/** The container's IPv4 address on the one compose network whose name ends with `_<suffix>`. */
export function ipOn(container: StartedTestContainer, suffix: string): string {
  const name = container.getNetworkNames().find((n) => n.endsWith(`_${suffix}`));
  if (name === undefined) throw new Error(`${container.getName()} is not on a network named *_${suffix}`);
  return container.getIpAddress(name);
}
