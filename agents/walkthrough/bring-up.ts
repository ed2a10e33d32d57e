// Starts the demo stack (or finds it already up) and shows progress: a line per service state change, and a spinner
// with the elapsed time (on a terminal) or a heartbeat line (in a log) while images build and services turn healthy.
import { type ComposeStack, describeState, type ServiceState } from './compose-stack.ts';

export interface Output {
  /** One complete line. */
  line(text: string): void;
  /** A transient status line (a terminal rewrites it in place); undefined clears it. */
  status?(text: string | undefined): void;
}

/** What "up" means: every service running and healthy where it has a healthcheck; the one-shot jobs exited 0. */
export function stackReady(services: readonly ServiceState[], expected: readonly string[]): boolean {
  const byName = new Map(services.map((s) => [s.service, s]));
  return expected.every((name) => {
    const s = byName.get(name);
    if (s === undefined) return false;
    if (s.state === 'exited') return s.exitCode === 0 && ONE_SHOT.has(name);
    return s.state === 'running' && (s.health === '' || s.health === 'healthy');
  });
}

/** Services of compose/demo.yaml that run once and exit. */
const ONE_SHOT = new Set(['identity-keys', 'issuer-keys']);

/** The services the walkthrough needs, in the order they come up. */
export const DEMO_SERVICES = [
  'identity-keys',
  'issuer-keys',
  'status-service',
  'helpdesk-tools',
  'model-stub',
  'basic-user-sidecar',
  'support-agent-sidecar',
  'admin-sidecar',
  'basic-user-agent',
  'support-agent-agent',
  'admin-agent',
  'router',
] as const;

/** A service that can never become ready: exited non-zero, or a long-running one that exited at all. */
export function failedServices(services: readonly ServiceState[]): ServiceState[] {
  return services.filter(
    (s) =>
      (s.state === 'exited' && (s.exitCode !== 0 || !ONE_SHOT.has(s.service))) || s.health === 'unhealthy',
  );
}

/** Lines for what changed between two `ps` snapshots. */
export function stateChanges(
  before: ReadonlyMap<string, string>,
  now: readonly ServiceState[],
): Array<{ service: string; from: string | undefined; to: string }> {
  const out: Array<{ service: string; from: string | undefined; to: string }> = [];
  for (const s of now) {
    const to = describeState(s);
    const from = before.get(s.service);
    if (from !== to) out.push({ service: s.service, from, to });
  }
  return out;
}

export interface BringUpOptions {
  readonly build: boolean;
  /** Overall limit; default 15 minutes (a cold build of three images on two cores takes a few). */
  readonly timeoutMs?: number;
  readonly pollMs?: number;
}

const SPINNER = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/**
 * Brings the stack up unless it already is. Returns true when reused. Throws with the failing services' last log
 * lines when it cannot come up.
 */
export async function bringUp(stack: ComposeStack, out: Output, opts: BringUpOptions): Promise<boolean> {
  const started = performance.now();
  const elapsed = () => `${((performance.now() - started) / 1000).toFixed(1).padStart(6)}s`;
  if (stackReady(await stack.services(), DEMO_SERVICES)) {
    out.line(`Reusing the running stack (project ${stack.project}).`);
    return true;
  }
  out.line(
    `Starting the stack (project ${stack.project}): ${opts.build ? 'building images, then ' : ''}starting ${DEMO_SERVICES.length} services.`,
  );
  let phase = opts.build ? 'building images' : 'starting';
  let lastOutput = '';
  const seen = new Map<string, string>();
  let tick = 0;
  let lastBeat = 0;
  const heartbeat = setInterval(() => {
    tick++;
    const detail = lastOutput ? ` · ${lastOutput.slice(0, 70)}` : '';
    if (out.status) out.status(`${SPINNER[tick % SPINNER.length]} ${elapsed()}  ${phase}${detail}`);
    else if (performance.now() - lastBeat > 15_000) {
      lastBeat = performance.now();
      out.line(`  ${elapsed()}  … ${phase}${detail}`);
    }
  }, 250);
  let done = false;
  const poll = (async () => {
    while (!done) {
      const services = await stack.services();
      for (const change of stateChanges(seen, services)) {
        seen.set(change.service, change.to);
        if (phase === 'building images') phase = 'starting services';
        out.status?.(undefined);
        out.line(
          `  ${elapsed()}  ${change.service.padEnd(22)} ${change.from ? `${change.from} → ` : ''}${change.to}`,
        );
      }
      await new Promise((r) => setTimeout(r, opts.pollMs ?? 1000));
    }
  })();
  try {
    const up = await stack.compose(['up', '-d', '--wait', ...(opts.build ? ['--build'] : ['--no-build'])], {
      timeoutMs: opts.timeoutMs ?? 15 * 60_000,
      onLine: (line) => {
        lastOutput = line.trim();
        if (/^(Step \d+\/\d+|#\d+ \[)/.test(lastOutput) || lastOutput.includes('Building'))
          phase = 'building images';
      },
    });
    done = true;
    await poll;
    const services = await stack.services();
    for (const change of stateChanges(seen, services)) {
      out.line(
        `  ${elapsed()}  ${change.service.padEnd(22)} ${change.from ? `${change.from} → ` : ''}${change.to}`,
      );
    }
    if (up.code !== 0 || !stackReady(services, DEMO_SERVICES)) {
      const failed = failedServices(services).map((s) => s.service);
      const logs = await stack.compose(['logs', '--no-color', '--tail', '15', ...failed]);
      throw new Error(
        `the stack did not come up (docker compose exit ${up.code}; failed: ${failed.join(', ') || 'none reported'})\n` +
          `${up.stderr.trim().split('\n').slice(-15).join('\n')}\n${logs.stdout.trim()}`,
      );
    }
    out.line(`Stack up in ${elapsed().trim()}.`);
    return false;
  } finally {
    done = true;
    clearInterval(heartbeat);
    out.status?.(undefined);
  }
}
