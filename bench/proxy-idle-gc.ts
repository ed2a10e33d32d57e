// Reproduces the forward proxy's GC pathology (docs/benchmarks.md, "Garbage collection in the request path"):
//   node bench/proxy-idle-gc.ts [idle-ms] [seconds]      # defaults: 1000 ms idle, then 8 s of load
// This process runs the shipped sidecar (startSidecar, a policy allowing the loopback upstream), imports
// gc-stats.ts (its GC line is printed at exit), waits `idle-ms`, then autocannon in a child process sends GETs
// through it over 32 keep-alive connections. With idle-ms 0 the same sidecar stays near 130 KiB per scavenge.
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { logDestination } from '../sidecar/cli/logger.ts';
import { startSidecar } from '../sidecar/server/sidecar.ts';

const SELF = fileURLToPath(import.meta.url);
const role = process.env['PROXY_IDLE_GC_ROLE'];

if (role === 'upstream') {
  const body = Buffer.alloc(1024, 'x');
  const server = createServer((_req, res) => {
    res
      .writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length })
      .end(body);
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  process.send?.({ port: (server.address() as AddressInfo).port });
} else if (role === 'client') {
  const [proxy, target, seconds] = process.argv.slice(2) as [string, string, string];
  const autocannon = createRequire(import.meta.url)('autocannon');
  const result = await new Promise<{ requests: { average: number }; non2xx: number }>((resolve, reject) => {
    const instance = autocannon({
      url: proxy,
      connections: 32,
      pipelining: 1,
      duration: Number(seconds),
      requests: [{ method: 'GET', path: target, headers: { host: new URL(target).host } }],
    });
    instance.on('done', resolve);
    instance.on('error', reject);
  });
  process.stdout.write(`load: ${Math.round(result.requests.average)} req/s, ${result.non2xx} non-2xx\n`);
  process.exit(0);
} else {
  await import('./gc-stats.ts');
  const idleMs = Number(process.argv[2] ?? 1000);
  const seconds = Number(process.argv[3] ?? 8);
  const child = (name: string, args: string[] = []) =>
    fork(SELF, args, { env: { ...process.env, PROXY_IDLE_GC_ROLE: name }, execArgv: [] });
  const upstream = child('upstream');
  const [{ port }] = (await once(upstream, 'message')) as [{ port: number }];
  const dir = await mkdtemp(join(tmpdir(), 'proxy-idle-gc-'));
  const policyPath = join(dir, 'policy.yaml');
  await writeFile(
    policyPath,
    `version: 1
agent: proxy-idle-gc
rules:
  - name: upstream
    action: network
    conditions:
      url: { starts_with: "http://127.0.0.1:${port}/" }
      method: { equals: GET }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
`,
  );
  const sidecar = await startSidecar(
    { policyPath, listen: { host: '127.0.0.1', port: 0 }, auditDir: join(dir, 'audit'), gateways: {} },
    pino(logDestination(join(dir, 'sidecar.log'))),
  );
  await new Promise((resolve) => setTimeout(resolve, idleMs));
  const proxy = `http://127.0.0.1:${sidecar.agentAddress.port}`;
  const client = child('client', [proxy, `http://127.0.0.1:${port}/`, String(seconds)]);
  await once(client, 'exit');
  upstream.kill();
  await sidecar.close(1_000);
  await rm(dir, { recursive: true, force: true });
  process.stdout.write(`idle before load: ${idleMs} ms\n`);
  process.exit(0);
}
