// Runs the demo router as a process: configuration from the environment, one JSON log line per event.
import { pino } from 'pino';
import { parseListen } from '../lib/json-http.ts';
import { DEFAULT_TOKEN_TTL_SECONDS, loadIssuer } from './issuer.ts';
import { DEFAULT_AGENT_PORT, defaultAgentDirectory, parseMisroutes } from './routing.ts';
import { type Router, startRouter } from './server.ts';

const logger = pino({ name: 'router' });

let router: Router | undefined;
let stopping = false;
const stop = (): void => {
  stopping = true;
  void router?.close().then(() => logger.flush());
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);

try {
  const env = process.env;
  const listen = parseListen(env['ROUTER_LISTEN'] || '0.0.0.0:8000', 'ROUTER_LISTEN');
  const ttl = Number(env['ROUTER_TOKEN_TTL_SECONDS'] || DEFAULT_TOKEN_TTL_SECONDS);
  if (!Number.isInteger(ttl) || ttl < 10 || ttl > 3600) {
    throw new Error('ROUTER_TOKEN_TTL_SECONDS must be 10..3600');
  }
  const agentPort = Number(env['ROUTER_AGENT_PORT'] || DEFAULT_AGENT_PORT);
  const misroutes = parseMisroutes(env['ROUTER_MISROUTE']);
  const issuer = await loadIssuer(
    env['ROUTER_ISSUER_KEY'] || '/var/lib/router/issuer/issuer.private.jwk.json',
    { ttlSeconds: ttl },
  );
  const agents = defaultAgentDirectory(agentPort);
  router = await startRouter({ ...listen, issuer, agents, misroutes, logger });
  logger.info({ url: router.url, kid: issuer.kid, agents }, 'router listening');
  if (misroutes.size > 0) {
    logger.warn(
      { misroute: Object.fromEntries(misroutes) },
      'ROUTER_MISROUTE is set: the injected routing bug sends these roles to another role’s agent',
    );
  }
  if (stopping) stop();
} catch (err) {
  logger.error({ err: (err as Error).message }, 'router failed to start');
  process.exitCode = 1;
}
