// Process entry of the demo helpdesk tool server: configuration from the environment, one log line, clean shutdown.
import { pino } from 'pino';
import { isSidecarError } from '../../sidecar/errors.ts';
import type { KeyLike } from '../../sidecar/identity/context-token.ts';
import { loadPublicKeys } from '../../sidecar/identity/keys.ts';
import type { HelpdeskToolServer } from './server.ts';
import { startHelpdeskToolServer } from './server.ts';

interface HelpdeskConfig {
  readonly host: string;
  readonly port: number;
  readonly dbPath: string;
  readonly keysPath: string | undefined;
  readonly requireContext: boolean;
}

function readConfig(env: NodeJS.ProcessEnv): HelpdeskConfig {
  const port = Number(env['HELPDESK_PORT'] ?? '8081');
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new Error('HELPDESK_PORT must be a port number');
  const flag = (env['HELPDESK_REQUIRE_CONTEXT'] ?? 'true').toLowerCase();
  if (!['true', 'false', '1', '0'].includes(flag))
    throw new Error('HELPDESK_REQUIRE_CONTEXT must be true or false');
  const requireContext = flag === 'true' || flag === '1';
  const keysPath = env['HELPDESK_KEYS'] || undefined;
  if (requireContext && keysPath === undefined) {
    throw new Error('HELPDESK_KEYS (the role public keys) is required unless HELPDESK_REQUIRE_CONTEXT=false');
  }
  return {
    host: env['HELPDESK_HOST'] || '0.0.0.0',
    port,
    dbPath: env['HELPDESK_DB'] || ':memory:',
    keysPath,
    requireContext,
  };
}

const logger = pino({ name: 'helpdesk-tools' });

// Signal handlers go in before anything is announced: a supervisor may send SIGTERM as soon as it reads the
// listening line, and a signal with no handler yet would kill the process instead of closing it.
let server: HelpdeskToolServer | undefined;
let stopping = false;
const stop = (): void => {
  stopping = true;
  void server?.close().then(() => logger.flush());
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);

try {
  const config = readConfig(process.env);
  const roleKeys =
    config.keysPath === undefined ? new Map<string, KeyLike[]>() : await loadPublicKeys(config.keysPath);
  server = await startHelpdeskToolServer({ ...config, roleKeys, logger });
  logger.info(
    {
      url: server.url,
      requireContext: config.requireContext,
      roles: [...roleKeys.keys()],
      db: config.dbPath,
    },
    'helpdesk tool server listening',
  );
  if (stopping) stop();
} catch (err) {
  logger.error(
    { detail: isSidecarError(err) ? err.detail : (err as Error).message },
    'helpdesk tool server failed to start',
  );
  process.exitCode = 1;
}
