// startup_timeout_ms bounds startup (docs/tools.md "Tool catalog and collisions": startup fails when "an upstream
// does not answer initialize and tools/list within startup_timeout_ms"), even when the upstream accepted the
// connection and its own timeout_ms is far longer. Fake timers: no wall clock.
import { rm } from 'node:fs/promises';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino } from 'pino';
import { afterEach, expect, it, vi } from 'vitest';
import { SidecarError } from '../../../sidecar/errors.ts';
import type { Enforcer } from '../../../sidecar/server/enforcer-types.ts';
import { createToolGateway } from '../../../sidecar/tools/gateway.ts';
import { roleKeyFiles, tempDir } from './support.ts';

afterEach(() => {
  vi.useRealTimers();
});

it('an upstream that accepts the connection and never answers fails startup at startup_timeout_ms, not at timeout_ms', async () => {
  const dir = await tempDir('mcp-startup-deadline');
  const keys = await roleKeyFiles(dir);
  const held: ServerResponse[] = [];
  let gotRequest: () => void = () => undefined;
  const requested = new Promise<void>((r) => {
    gotRequest = r;
  });
  const hang = createServer((req, res) => {
    req.resume();
    held.push(res);
    gotRequest();
  });
  await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });

  let outcome: unknown = 'pending';
  const started = createToolGateway({
    config: {
      upstreams: [
        {
          name: 'hang',
          url: `http://127.0.0.1:${(hang.address() as AddressInfo).port}/mcp`,
          timeout_ms: 120_000,
        },
      ],
      context: { key_file: keys.privateFiles.get('admin') as string },
      startup_timeout_ms: 500,
    },
    parts: {
      enforcer: { agent: 'admin' } as unknown as Enforcer,
      policies: { current: { agent: 'admin', digest: 'd', mayExposeTool: () => true } },
      logger: pino({ level: 'silent' }),
    },
  }).then(
    () => 'started',
    (e: unknown) => e,
  );
  void started.then((o) => {
    outcome = o;
  });
  await requested; // initialize is on the wire and will never be answered
  await vi.advanceTimersByTimeAsync(5_000); // ten times startup_timeout_ms, far below timeout_ms
  const atDeadline = outcome;

  // Let anything still pending run out, then clean up.
  await vi.advanceTimersByTimeAsync(200_000);
  vi.useRealTimers();
  for (const res of held) res.destroy();
  await new Promise<void>((r) => {
    hang.close(() => r());
    hang.closeAllConnections();
  });
  await started;
  await rm(dir, { recursive: true, force: true });

  expect(atDeadline).toBeInstanceOf(SidecarError);
  expect((atDeadline as SidecarError).code).toBe('SIDECAR_ERR_UPSTREAM_TIMEOUT');
});
