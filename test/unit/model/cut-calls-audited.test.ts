// A charged model call always has its `model_usage` audit entry, also when its stream is cut: here by SIGTERM
// (sidecar.close) while the answer is still coming. Found by review, round 6: the entry was written only for
// outcome `forwarded`, so a cut stream (`client_gone`, likewise an agent leaving just before the last event) was
// charged in the spend file while the audit showed an ALLOW and no cost.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import type { ModelStub } from '../../../agents/model-stub/server.ts';
import { AGENT, BASE_POLICY, startGateway, startStub } from './support.ts';

let stub: ModelStub | undefined;
afterAll(async () => {
  await stub?.close();
});

it('a stream cut by shutdown is charged and its usage is audited', async () => {
  stub = await startStub();
  const gw = await startGateway(stub.url, {
    policy: `${BASE_POLICY}budgets:\n  - { name: daily, period: day, max_tokens: 1000000 }\n`,
  });
  const ac = new AbortController();
  const res = await fetch(`${gw.url}/anthropic/v1/messages`, {
    method: 'POST',
    signal: ac.signal,
    headers: {
      'content-type': 'application/json',
      'anthropic-version': '2023-06-01',
      'x-stub-chunk-delay-ms': '400',
    },
    body: JSON.stringify({
      model: 'stub-small',
      max_tokens: 2000,
      stream: true,
      messages: [{ role: 'user', content: 'tell me a long story' }],
    }),
  });
  expect(res.status).toBe(200);
  const reader = res.body!.getReader();
  await reader.read(); // the stream has begun: the vendor is working on (and billing) it

  // SIGTERM with a short grace, mid-stream.
  await gw.sidecar.close(50);
  await gw.gateway.close();
  ac.abort();

  const entries = (await gw.audit()).filter((e) => e.kind === 'model');
  const allow = entries.find((e) => e.effect === 'ALLOW');
  expect(allow).toBeDefined();

  // The ledger charged it, and the spend file (written at close) says so.
  const spend = JSON.parse(await readFile(join(gw.dir, 'audit', `${AGENT}.spend.json`), 'utf8'));
  const spent =
    Object.values(spend.budgets as Record<string, { spent_tokens: number }>)[0]?.spent_tokens ?? 0;
  expect(spent).toBeGreaterThan(0);

  // ...but the audit has no usage entry for the call that was charged.
  const usage = entries.filter(
    (e) => e.reason === 'model_usage' && (e.extra as { request?: string }).request === allow!.decision_id,
  );
  expect(usage).toHaveLength(1);
}, 20_000);
