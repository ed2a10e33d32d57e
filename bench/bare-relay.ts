// The reference forwarder the proxy and model benchmarks measure the sidecar against: undici's lowest-level API
// (dispatch, each chunk written straight to the agent's response), no policy, parsing, audit, log or metrics.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';

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
