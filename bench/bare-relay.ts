// The reference forwarder the proxy and model benchmarks measure the sidecar against: undici's lowest-level API
// (dispatch, each chunk written straight to the agent's response), no policy, parsing, audit, log or metrics.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { type Dispatcher, Pool } from 'undici';

/** Hop-by-hop headers the forwarder does not pass on (and `host`, which it sets). */
const BARE_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'host']);

/** The agent's request headers as undici takes them (flat name/value list), with `host` set to the upstream's. */
export function bareRequestHeaders(req: IncomingMessage, host: string): string[] {
  const headers: string[] = [];
  const raw = req.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    if (!BARE_HOP.has((raw[i] as string).toLowerCase())) headers.push(raw[i] as string, raw[i + 1] as string);
  }
  headers.push('host', host);
  return headers;
}

/** Relays the upstream's answer to `res` as it arrives: status and end-to-end headers, then every chunk. */
export function bareRelay(res: ServerResponse): Dispatcher.DispatchHandler {
  return {
    onRequestStart() {},
    onResponseStart(_controller, statusCode, headers) {
      const out: Record<string, string | string[]> = {};
      for (const name in headers) {
        const value = headers[name];
        if (value !== undefined && !BARE_HOP.has(name)) out[name] = value;
      }
      res.writeHead(statusCode, out);
    },
    onResponseData(controller, chunk) {
      if (!res.write(chunk)) {
        controller.pause();
        res.once('drain', () => controller.resume());
      }
    },
    onResponseEnd() {
      res.end();
    },
    onResponseError(_controller, _err) {
      if (res.headersSent) res.destroy();
      else res.writeHead(502).end();
    },
  };
}

/**
 * A forwarder for gateway benchmarks on loopback: each request's body is read whole first (as any gateway must,
 * to judge it), then relayed as a POST to `upstream`'s origin at `path(requestTarget)`. Resolves with its port.
 */
export async function serveBareForwarder(
  upstream: string,
  path: (target: string) => string,
): Promise<number> {
  const target = new URL(upstream);
  const pool = new Pool(target.origin, { keepAliveTimeout: 60_000 });
  const server = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const headers = bareRequestHeaders(req, target.host);
      pool.dispatch(
        { path: path(req.url ?? ''), method: 'POST', headers, body: Buffer.concat(chunks) },
        bareRelay(res),
      );
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as AddressInfo).port;
}
