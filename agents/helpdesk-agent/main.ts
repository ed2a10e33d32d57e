// Runs the helpdesk agent as a process: configuration from the environment, one JSON log line per chat.
import { pino } from 'pino';
import { parseListen } from '../lib/json-http.ts';
import { type AgentServer, startAgentServer } from './server.ts';

const logger = pino({ name: 'helpdesk-agent' });

let server: AgentServer | undefined;
let stopping = false;
const stop = (): void => {
  stopping = true;
  void server?.close().then(() => logger.flush());
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);

try {
  const env = process.env;
  const listen = parseListen(env['AGENT_LISTEN'] || '127.0.0.1:8088', 'AGENT_LISTEN');
  const sidecarUrl = env['SIDECAR_URL'] || 'http://127.0.0.1:15000';
  const mcpUrl = env['MCP_URL'] || `${sidecarUrl}/mcp`;
  const anthropicBaseUrl = env['ANTHROPIC_BASE_URL'] || `${sidecarUrl}/anthropic`;
  const model = env['AGENT_MODEL'] || 'claude-haiku-4-5';
  server = await startAgentServer({ ...listen, mcpUrl, anthropicBaseUrl, model, logger });
  // The role is nowhere in here: it is whatever policy the sidecar next to this process loaded.
  logger.info(
    { url: server.url, mcp: mcpUrl, model_api: anthropicBaseUrl, model },
    'helpdesk agent listening',
  );
  if (stopping) stop();
} catch (err) {
  logger.error({ err: (err as Error).message }, 'helpdesk agent failed to start');
  process.exitCode = 1;
}
