// The agent container's health check: the chat port is listening, and the sidecar answers /readyz.
// The lockdown refuses the agent's UID a connection to its own port on loopback, so the listener is read from the
// namespace's socket table instead of connected to.
import { readFileSync } from 'node:fs';

const port = Number((process.env['AGENT_LISTEN'] || '127.0.0.1:8088').split(':').pop());
const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
const listening = ['/proc/net/tcp', '/proc/net/tcp6'].some((file) => {
  let table = '';
  try {
    table = readFileSync(file, 'utf8');
  } catch {
    return false;
  }
  // local_address is "ADDR:PORT" in hex; state 0A is LISTEN.
  return table.split('\n').some((line) => {
    const cols = line.trim().split(/\s+/);
    return cols[1]?.endsWith(`:${hexPort}`) === true && cols[3] === '0A';
  });
});
if (!listening) process.exit(1);
const sidecar = process.env['SIDECAR_URL'] || 'http://127.0.0.1:15000';
fetch(`${sidecar}/readyz`, { signal: AbortSignal.timeout(2000) }).then(
  (r) => process.exit(r.status === 200 ? 0 : 1),
  () => process.exit(1),
);
