// The demo stack as the walkthrough drives it: `docker compose` for one project, exec into its services, its state.
import { spawn } from 'node:child_process';
import { resolve } from 'node:path';

export const REPO_ROOT = resolve(import.meta.dirname, '../..');
export const DEMO_FILE = 'compose/demo.yaml';
export const ANTHROPIC_FILE = 'compose/demo.anthropic.yaml';
/** compose/demo.yaml's `name:`. */
export const DEFAULT_PROJECT = 'helpdesk-demo';
export const ROLES = ['basic-user', 'support-agent', 'admin'] as const;
export type Role = (typeof ROLES)[number];

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunOptions {
  /** Extra environment for compose's interpolation (the process environment is always passed). */
  readonly env?: Readonly<Record<string, string>>;
  /** Each line of output as it arrives (stdout and stderr). */
  readonly onLine?: (line: string) => void;
  readonly timeoutMs?: number;
}

/** One service as `docker compose ps` reports it. */
export interface ServiceState {
  readonly service: string;
  /** created, running, exited, restarting, … */
  readonly state: string;
  /** healthy, unhealthy, starting, or '' without a healthcheck. */
  readonly health: string;
  readonly exitCode: number;
}

export function describeState(s: ServiceState): string {
  if (s.state === 'exited') return `exited (${s.exitCode})`;
  return s.health ? `${s.state} (${s.health})` : s.state;
}

/** Runs a command to completion; never throws for a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(cmd, args, {
      cwd: REPO_ROOT,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    const lines = (chunk: string, partial: { rest: string }) => {
      if (opts.onLine === undefined) return;
      const text = partial.rest + chunk;
      const parts = text.split(/\r?\n|\r/);
      partial.rest = parts.pop() ?? '';
      for (const line of parts) if (line.trim() !== '') opts.onLine(line);
    };
    const outRest = { rest: '' };
    const errRest = { rest: '' };
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      lines(d, outRest);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      lines(d, errRest);
    });
    const timer =
      opts.timeoutMs === undefined ? undefined : setTimeout(() => child.kill('SIGTERM'), opts.timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      if (timer) clearTimeout(timer);
      resolvePromise({ code: code ?? 1, stdout, stderr });
    });
  });
}

export interface StackOptions {
  readonly project?: string;
  /** Compose files, relative to the repository root; default compose/demo.yaml. */
  readonly files?: readonly string[];
  /** Interpolation variables every compose call gets (NODE_IMAGE, ROUTER_PORT, …). */
  readonly env?: Readonly<Record<string, string>>;
}

export class ComposeStack {
  readonly project: string;
  readonly files: readonly string[];
  readonly env: Readonly<Record<string, string>>;

  constructor(opts: StackOptions = {}) {
    this.project = opts.project ?? DEFAULT_PROJECT;
    this.files = opts.files ?? [DEMO_FILE];
    this.env = opts.env ?? {};
  }

  compose(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    const base = ['compose', '-p', this.project, ...this.files.flatMap((f) => ['-f', f])];
    return run('docker', [...base, ...args], { ...opts, env: { ...this.env, ...opts.env } });
  }

  /** `docker compose ps -a`, one entry per service container. */
  async services(): Promise<ServiceState[]> {
    const r = await this.compose(['ps', '-a', '--format', 'json']);
    if (r.code !== 0) return [];
    const text = r.stdout.trim();
    if (text === '') return [];
    // compose 2.21+ prints one JSON object per line; older versions print one array.
    const rows: unknown[] = text.startsWith('[')
      ? (JSON.parse(text) as unknown[])
      : text.split('\n').map((l) => JSON.parse(l) as unknown);
    return rows.map((row) => {
      const r = row as Record<string, unknown>;
      return {
        service: String(r['Service'] ?? r['Name'] ?? '?'),
        state: String(r['State'] ?? '').toLowerCase(),
        health: String(r['Health'] ?? '').toLowerCase(),
        exitCode: Number(r['ExitCode'] ?? 0),
      };
    });
  }

  /** Runs a command in a running service's container (`exec -T`), as `user` when given. */
  exec(
    service: string,
    command: readonly string[],
    opts: { readonly user?: string; readonly env?: Readonly<Record<string, string>> } = {},
  ): Promise<RunResult> {
    const flags = ['-T'];
    if (opts.user) flags.push('-u', opts.user);
    for (const [k, v] of Object.entries(opts.env ?? {})) flags.push('-e', `${k}=${v}`);
    return this.compose(['exec', ...flags, service, ...command], { timeoutMs: 120_000 });
  }

  /** The agent-sidecar CLI inside a role's sidecar container, as the sidecar's UID (it holds the admin token). */
  sidecarCli(role: Role, args: readonly string[]): Promise<RunResult> {
    return this.exec(`${role}-sidecar`, ['agent-sidecar', ...args], { user: '10001' });
  }

  /** The router's published address on the host, e.g. http://127.0.0.1:8000. */
  async routerUrl(): Promise<string> {
    const r = await this.compose(['port', 'router', '8000']);
    const hostPort = r.stdout.trim().split('\n')[0] ?? '';
    if (r.code !== 0 || !/:\d+$/.test(hostPort))
      throw new Error(`the router has no published port (${r.stderr.trim()})`);
    return `http://${hostPort.replace(/^0\.0\.0\.0:/, '127.0.0.1:')}`;
  }

  /** Recreates only the router, with the injected routing bug on (`basic-user:admin`) or off (''), and waits for it. */
  async restartRouter(misroute: string): Promise<void> {
    const r = await this.compose(
      ['up', '-d', '--no-deps', '--no-build', '--force-recreate', '--wait', 'router'],
      {
        env: { ROUTER_MISROUTE: misroute },
        timeoutMs: 120_000,
      },
    );
    if (r.code !== 0) throw new Error(`restarting the router failed: ${(r.stderr || r.stdout).trim()}`);
  }

  /** Container IPv4 addresses of a service, by network name without the project prefix. */
  async addresses(service: string): Promise<Record<string, string>> {
    const id = (await this.compose(['ps', '-q', service])).stdout.trim().split('\n')[0] ?? '';
    if (id === '') return {};
    const r = await run('docker', [
      'inspect',
      '-f',
      '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}',
      id,
    ]);
    const out: Record<string, string> = {};
    for (const pair of r.stdout.trim().split(/\s+/)) {
      const [net, ip] = pair.split('=');
      const prefix = `${this.project}_`;
      if (net && ip) out[net.startsWith(prefix) ? net.slice(prefix.length) : net] = ip;
    }
    return out;
  }

  down(): Promise<RunResult> {
    return this.compose(['down', '-v', '--remove-orphans', '-t', '5'], { timeoutMs: 180_000 });
  }
}
