// sidecar.close(grace) while a CONNECT tunnel is open cuts the tunnel and finishes (audit chain closed, final
// checkpoint written). Found by review, round 6: close() waited for the agent listener to drain (or the grace),
// then ran its cleanups in reverse: the admin
// listener, then `server.close(cb)` a second time, and only after that proxy.close(), which is what destroys
// tunnels. A tunnel socket is detached from node:http (closeAllConnections does not see it) but still counted by
// net.Server, so `server.close`'s callback waits for the tunnel: close() never gets to proxy.close() nor to
// audit.close(). SIGTERM hangs for as long as the agent keeps its tunnel busy; the final checkpoint is never written.
import { once } from 'node:events';
import { readFile, rm } from 'node:fs/promises';
import { type AddressInfo, connect, createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, expect, it } from 'vitest';
import { startInProcess } from '../reliability/harness.ts';

const cleanups: Array<() => unknown> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

it('close(grace) ends an open CONNECT tunnel and closes the audit chain', async () => {
  // A loopback upstream that keeps every connection open (a long download, a websocket, an idle keep-alive).
  const upstream = createServer((s) => s.on('error', () => {}));
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  const upPort = (upstream.address() as AddressInfo).port;
  cleanups.push(() => upstream.close());

  const sc = await startInProcess({ proxyLimits: { tunnelIdleTimeoutMs: 600_000 } });
  const sidecar = sc.sidecar!;
  const client = connect(sc.port, '127.0.0.1');
  client.on('error', () => {});
  cleanups.push(async () => {
    client.destroy();
    await sidecar.close(50);
    await rm(sc.dir, { recursive: true, force: true });
  });
  await once(client, 'connect');
  client.write(`CONNECT 127.0.0.1:${upPort} HTTP/1.1\r\nHost: 127.0.0.1:${upPort}\r\n\r\n`);
  const [head] = (await once(client, 'data')) as [Buffer];
  expect(head.toString()).toMatch(/^HTTP\/1\.1 200 /);

  const clientClosed = once(client, 'close').then(() => 'tunnel cut' as const);
  const closed = sidecar.close(50).then(() => 'closed' as const);
  // A bound 100x the grace: a close that honours its grace is long done; one that waits on the tunnel never is.
  const outcome = await Promise.race([closed, sleep(5_000).then(() => 'still closing' as const)]);
  expect(outcome).toBe('closed');
  expect(await Promise.race([clientClosed, sleep(1_000).then(() => 'tunnel open' as const)])).toBe(
    'tunnel cut',
  );
  // The chain was closed: its final checkpoint covers the tunnel's ALLOW entry.
  const cps = (await readFile(sidecar.audit.checkpointsPath, 'utf8')).trim().split('\n');
  expect(JSON.parse(cps.at(-1)!).count).toBeGreaterThanOrEqual(1);
}, 20_000);
