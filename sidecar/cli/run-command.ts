// `agent-sidecar run`: one sidecar for one agent's policy, until SIGTERM; SIGHUP reloads the policy.
import { Command, Option } from 'commander';
import { AUDIT_SYNC_MODES, type AuditSyncMode, DEFAULT_AUDIT_SYNC } from '../audit/sync-mode.ts';
import { isSidecarError } from '../errors.ts';
import { classifyAddress } from '../proxy/ip-classify.ts';
import type { ListenAddress, Sidecar, SidecarConfig } from '../server/sidecar.ts';
import { type CliIo, EXIT } from './io.ts';
import { createRootLogger, flushLogger } from './logger.ts';

export const RUN_DEFAULTS = {
  listen: '127.0.0.1:15000',
  adminListen: '127.0.0.1:15001',
  auditDir: './audit',
  approvalTimeoutSeconds: '300',
  shutdownGraceSeconds: '10',
} as const;

export function parseHostPort(value: string, flag: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`${flag} must be HOST:PORT, got "${value}"`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, ''), port };
}

function parseListen(value: string, flag: string): ListenAddress {
  if (value.startsWith('unix:')) return { socketPath: value.slice('unix:'.length) };
  return parseHostPort(value, flag);
}

// setTimeout holds at most 2^31-1 ms (about 24.8 days); a longer delay fires at once.
const MAX_TIMER_MS = 2_147_483_647;

/** Seconds as whole milliseconds a timer can hold: at least 1 ms, at most about 24.8 days. */
function seconds(value: string, flag: string): number {
  const n = Number(value);
  const ms = Math.round(n * 1000);
  if (!Number.isFinite(n) || n <= 0 || ms < 1 || ms > MAX_TIMER_MS) {
    throw new Error(`${flag} must be a number of seconds from 0.001 to ${MAX_TIMER_MS / 1000}`);
  }
  return ms;
}

/**
 * A boolean environment variable, read here rather than by commander, which counts any value as set: an operator
 * writing SIDECAR_NO_AUDIT_FSYNC=false must not get fsync switched off. Anything but a clear yes or no is refused.
 */
function envFlag(name: string): boolean | undefined {
  const raw = process.env[name];
  if (raw === undefined) return undefined;
  const v = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off', ''].includes(v)) return false;
  throw new Error(`${name} must be true or false, got ${JSON.stringify(raw)}`);
}

interface RunOptions {
  policy: string;
  listen: string;
  adminListen: string;
  adminTokenFile?: string;
  auditDir: string;
  approvalTimeout: string;
  shutdownGrace: string;
  watch: boolean;
  logLevel: string;
  logPretty?: boolean;
  config?: string;
  auditSync: string;
  auditFsync: boolean;
}

export function runCommand(io: CliIo): Command {
  return new Command('run')
    .description('run the sidecar for the one agent named by the policy file')
    .addOption(
      new Option('--policy <file>', 'the agent policy (the sidecar never reads another)')
        .env('SIDECAR_POLICY')
        .makeOptionMandatory(),
    )
    .addOption(
      new Option('--listen <host:port>', 'agent-facing listener: action API, gateways, forward proxy')
        .env('SIDECAR_LISTEN')
        .default(RUN_DEFAULTS.listen),
    )
    .addOption(
      new Option('--admin-listen <host:port|unix:path>', 'admin API: approvals and /metrics')
        .env('SIDECAR_ADMIN_LISTEN')
        .default(RUN_DEFAULTS.adminListen),
    )
    .addOption(
      new Option(
        '--admin-token-file <file>',
        'bearer token for the admin API; without it the admin API is off',
      ).env('SIDECAR_ADMIN_TOKEN_FILE'),
    )
    .addOption(
      new Option('--audit-dir <dir>', 'where <agent>.audit.jsonl and its checkpoints are written')
        .env('SIDECAR_AUDIT_DIR')
        .default(RUN_DEFAULTS.auditDir),
    )
    .addOption(
      new Option('--approval-timeout <seconds>', 'how long REQUIRE_APPROVAL holds a request before DENY')
        .env('SIDECAR_APPROVAL_TIMEOUT')
        .default(RUN_DEFAULTS.approvalTimeoutSeconds),
    )
    .addOption(
      new Option('--shutdown-grace <seconds>', 'how long in-flight requests may finish after SIGTERM')
        .env('SIDECAR_SHUTDOWN_GRACE')
        .default(RUN_DEFAULTS.shutdownGraceSeconds),
    )
    .addOption(
      new Option(
        '--no-watch',
        'do not reload when the policy file changes (SIGHUP still reloads); env SIDECAR_NO_WATCH=true|false',
      ),
    )
    .addOption(new Option('--log-level <level>', 'pino log level').env('SIDECAR_LOG_LEVEL').default('info'))
    .addOption(
      new Option(
        '--log-pretty',
        'human-readable logs (development; needs pino-pretty); env SIDECAR_LOG_PRETTY=true|false',
      ),
    )
    .addOption(
      new Option(
        '--audit-sync <mode>',
        'when audit entries reach the disk: always = fdatasync before the action proceeds; interval = written before, fdatasync within 20 ms (a machine crash can lose the last 20 ms); never = written before, synced by the kernel',
      )
        .choices(AUDIT_SYNC_MODES)
        .env('SIDECAR_AUDIT_SYNC')
        .default(DEFAULT_AUDIT_SYNC),
    )
    .addOption(
      new Option('--no-audit-fsync', 'the same as --audit-sync never; env SIDECAR_NO_AUDIT_FSYNC=true|false'),
    )
    .addOption(
      new Option(
        '--config <file>',
        'YAML with gateway settings: model (keys, prices), mcp (tool upstreams, context key), identity (end-user tokens)',
      ).env('SIDECAR_CONFIG'),
    )
    .action(async (opts: RunOptions, command: Command) => {
      let config: SidecarConfig;
      let grace: number;
      let pretty: boolean;
      try {
        const noFsync = !opts.auditFsync || envFlag('SIDECAR_NO_AUDIT_FSYNC') === true;
        if (
          noFsync &&
          command.getOptionValueSource('auditSync') !== 'default' &&
          opts.auditSync !== 'never'
        ) {
          throw new Error(`--no-audit-fsync contradicts --audit-sync ${opts.auditSync}: give one of them`);
        }
        grace = seconds(opts.shutdownGrace, '--shutdown-grace');
        pretty = opts.logPretty === true || envFlag('SIDECAR_LOG_PRETTY') === true;
        config = {
          policyPath: opts.policy,
          listen: parseHostPort(opts.listen, '--listen'),
          adminListen: parseListen(opts.adminListen, '--admin-listen'),
          ...(opts.adminTokenFile ? { adminTokenFile: opts.adminTokenFile } : {}),
          auditDir: opts.auditDir,
          approvalTimeoutMs: seconds(opts.approvalTimeout, '--approval-timeout'),
          watchPolicy: opts.watch && envFlag('SIDECAR_NO_WATCH') !== true,
          auditSync: noFsync ? 'never' : (opts.auditSync as AuditSyncMode),
        };
      } catch (err) {
        return io.fail(EXIT.usage, (err as Error).message);
      }
      const logger = createRootLogger({ level: opts.logLevel, ...(pretty ? { pretty: true } : {}) });
      // Node's default for SIGHUP is to exit. A SIGHUP during startup (a reloader, an operator) must not kill the
      // process: it is remembered and honoured as a reload once the sidecar is up.
      let reloadRequested = false;
      const earlyHup = () => {
        reloadRequested = true;
      };
      process.on('SIGHUP', earlyHup);
      if (!isLoopback(config.listen.host)) {
        logger.warn(
          { listen: `${config.listen.host}:${config.listen.port}` },
          'agent listener is not on loopback: anyone who reaches it acts as this agent (its policy, its model key, its tool context)',
        );
      }
      let sidecar: Sidecar;
      try {
        // Loaded here so the policy commands never pay for (or depend on) the runtime.
        const { startSidecar } = await import('../server/sidecar.ts');
        const { loadSidecarConfigFile } = await import('../config-file.ts');
        const gateways = opts.config ? await loadSidecarConfigFile(opts.config) : {};
        sidecar = await startSidecar({ ...config, gateways }, logger);
      } catch (err) {
        const msg = isSidecarError(err)
          ? `${err.code}: ${err.message}`
          : `SIDECAR_ERR_INTERNAL: ${(err as Error).message}`;
        await flushLogger(logger);
        process.off('SIGHUP', earlyHup);
        return io.fail(EXIT.usage, msg);
      }
      const stop = (signal: string) => {
        logger.info({ signal }, 'shutting down');
        sidecar
          .close(grace)
          .then(() => flushLogger(logger))
          .then(
            () => io.setExit(EXIT.ok),
            (err: unknown) => {
              logger.error({ err: (err as Error).message }, 'shutdown failed');
              io.setExit(EXIT.failure);
            },
          );
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
      process.on('SIGHUP', () => void sidecar.policies.reload('SIGHUP'));
      process.off('SIGHUP', earlyHup);
      if (reloadRequested) void sidecar.policies.reload('SIGHUP');
    });
}

/** 127.0.0.0/8, ::1 (in any spelling the address classifier knows) and localhost: only this network namespace. */
function isLoopback(host: string): boolean {
  return host === 'localhost' || classifyAddress(host.replace(/^\[(.*)\]$/, '$1')).kind === 'loopback';
}
