// docs/admin-api.md: without the token "the answer is 401 SIDECAR_ERR_ADMIN_UNAUTHORIZED ... for every path,
// including paths that do not exist: an unauthenticated caller learns nothing about the routes." That includes a
// request whose target is not origin-form (absolute-form, asterisk-form): the token is checked before anything.
import { once } from 'node:events';
import { connect } from 'node:net';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApprovalQueue } from '../../../sidecar/approvals/approval-queue.ts';
import type { AdminListener } from '../../../sidecar/server/admin-listener.ts';
import { createAdminHandler, startAdminListener } from '../../../sidecar/server/admin-listener.ts';
import { createMetrics } from '../../../sidecar/server/metrics.ts';

let listener: AdminListener;
let port: number;

beforeAll(async () => {
  listener = await startAdminListener(
    { host: '127.0.0.1', port: 0 },
    createAdminHandler({
      token: 'T'.repeat(40),
      approvals: new ApprovalQueue(),
      metrics: createMetrics(),
      logger: pino({ level: 'silent' }),
      ready: () => true,
    }),
  );
  if (!('port' in listener.address)) throw new Error('expected TCP');
  port = listener.address.port;
});

afterAll(async () => {
  await listener.close();
});

async function statusLine(target: string): Promise<string> {
  const s = connect(port, '127.0.0.1');
  s.write(`GET ${target} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n`);
  let out = '';
  s.on('data', (d: Buffer) => {
    out += d.toString('latin1');
  });
  await once(s, 'close');
  return out.split('\r\n', 1)[0]!;
}

describe('admin API without a token', () => {
  it.each(['http://127.0.0.1/v1/approvals', 'http://admin/metrics', '*'])(
    'answers 401 for target %s',
    async (target) => {
      expect(await statusLine(target)).toBe('HTTP/1.1 401 Unauthorized');
    },
  );
});
