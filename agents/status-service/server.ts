// The demo's shared status service: a public status page, an internal incidents page, and a UDP echo on the same port.
// Sidecars reach it as status.helpdesk.internal; each policy decides which paths its agent may read.
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StatusServiceOptions {
  readonly host?: string;
  readonly port?: number;
  /** Echo UDP datagrams on the same port: a reachability target for UDP egress checks. */
  readonly udpEcho?: boolean;
  /** One call per request and per datagram (the process entry logs them). */
  readonly onEvent?: (event: StatusEvent) => void;
}

export interface StatusEvent {
  readonly kind: 'http' | 'udp';
  readonly from: string;
  readonly method?: string;
  readonly path?: string;
  readonly status?: number;
}

export interface StatusService extends AsyncDisposable {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

const PAGES: Record<string, unknown> = {
  '/public/status': {
    status: 'operational',
    components: [
      { name: 'knowledge-base', status: 'operational' },
      { name: 'ticketing', status: 'operational' },
    ],
  },
  '/internal/incidents': { incidents: [{ id: 'inc-7', title: 'Ticket export delayed', severity: 'minor' }] },
  '/healthz': { ok: true },
};

function answer(req: IncomingMessage, res: ServerResponse, onEvent?: (e: StatusEvent) => void): void {
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  const page = PAGES[path];
  const allowed = req.method === 'GET' || req.method === 'HEAD';
  const status = !allowed ? 405 : page === undefined ? 404 : 200;
  const text = JSON.stringify(
    status === 200 ? page : { error: status === 405 ? 'method_not_allowed' : 'not_found' },
  );
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(req.method === 'HEAD' ? undefined : text);
  if (path !== '/healthz') {
    onEvent?.({ kind: 'http', from: req.socket.remoteAddress ?? '', method: req.method ?? '', path, status });
  }
}

export async function startStatusService(opts: StatusServiceOptions = {}): Promise<StatusService> {
  const host = opts.host ?? '127.0.0.1';
  const server: Server = createServer((req, res) => {
    req.resume();
    answer(req, res, opts.onEvent);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, resolve);
  });
  const port = (server.address() as AddressInfo).port;

  let udp: Socket | undefined;
  if (opts.udpEcho) {
    const socket = createSocket(host.includes(':') ? 'udp6' : 'udp4');
    socket.on('message', (msg, from) => {
      socket.send(msg.subarray(0, 512), from.port, from.address);
      opts.onEvent?.({ kind: 'udp', from: from.address });
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, host, resolve);
    });
    udp = socket;
  }

  const close = async (): Promise<void> => {
    udp?.close();
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  };
  const shown = host.includes(':') ? `[${host}]` : host;
  return { url: `http://${shown}:${port}`, port, close, [Symbol.asyncDispose]: close };
}
