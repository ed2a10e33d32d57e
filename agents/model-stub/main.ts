// Runs the offline model stand-in as a process: configuration from the environment, one log line, clean exit on signals.

import { startModelStub } from './server.ts';

const host = process.env['MODEL_STUB_HOST'] || '0.0.0.0';
const portText = process.env['MODEL_STUB_PORT'] || '8080';
const port = Number(portText);
if (!/^\d+$/.test(portText) || port > 65535) {
  process.stderr.write(
    `${JSON.stringify({ level: 'error', component: 'model-stub', msg: 'MODEL_STUB_PORT must be a port number', value: portText })}\n`,
  );
  process.exit(1);
}

const stub = await startModelStub({
  host,
  port,
  requireApiKey: process.env['MODEL_STUB_API_KEY'] || undefined,
  // Nobody reads the record in a container; keeping it would grow the process with every call it serves.
  recordLimit: 0,
});
process.stdout.write(
  `${JSON.stringify({ level: 'info', component: 'model-stub', msg: 'listening', url: stub.url, host, port: stub.port })}\n`,
);

const stop = (): void => {
  void stub.close();
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
