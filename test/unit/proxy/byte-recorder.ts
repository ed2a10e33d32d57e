// A raw TCP upstream that records every byte it receives and answers each request
// head with a fixed 200, so a test can compare what the policy judged with what actually went upstream.
import { once } from 'node:events';
import { type AddressInfo, createServer, type Socket } from 'node:net';

export interface Recorder {
  readonly port: number;
  /** Everything received, all connections, in arrival order. */
  text(): string;
  close(): Promise<void>;
}

export async function startRecorder(): Promise<Recorder> {
  let received = '';
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.on('close', () => sockets.delete(s));
    let buf = '';
    s.on('data', (d: Buffer) => {
      received += d.toString('latin1');
      buf += d.toString('latin1');
      while (buf.includes('\r\n\r\n')) {
        buf = buf.slice(buf.indexOf('\r\n\r\n') + 4);
        s.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
      }
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    text: () => received,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

/** The request heads (request line + headers, lower-cased names) found in what the upstream received. */
export function heads(text: string): Array<{ line: string; headers: Array<[string, string]> }> {
  const out: Array<{ line: string; headers: Array<[string, string]> }> = [];
  for (const block of text.split('\r\n\r\n')) {
    const lines = block.split('\r\n');
    const line = lines[0] ?? '';
    if (!/^[A-Z-]+ \S+ HTTP\/1\.[01]$/.test(line)) continue;
    out.push({
      line,
      headers: lines.slice(1).map((l) => {
        const i = l.indexOf(':');
        return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()] as [string, string];
      }),
    });
  }
  return out;
}
