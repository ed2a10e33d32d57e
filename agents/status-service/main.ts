// Runs the status service as a process: configuration from the environment, one JSON line per event.
import { startStatusService } from './server.ts';

const log = (fields: Record<string, unknown>): void => {
  process.stdout.write(
    `${JSON.stringify({ time: new Date().toISOString(), component: 'status-service', ...fields })}\n`,
  );
};

const portText = process.env['STATUS_PORT'] || '8080';
if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
  log({ level: 'error', msg: 'STATUS_PORT must be a port number', value: portText });
  process.exit(1);
}

const service = await startStatusService({
  host: process.env['STATUS_HOST'] || '0.0.0.0',
  port: Number(portText),
  udpEcho: (process.env['STATUS_UDP_ECHO'] ?? 'true') !== 'false',
  onEvent: (event) => log({ level: 'info', msg: 'request', ...event }),
});
log({ level: 'info', msg: 'listening', url: service.url });

const stop = (): void => {
  void service.close();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
