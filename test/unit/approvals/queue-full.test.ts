// End to end: a hostile agent floods its sidecar with actions that need approval. The queue keeps at most its
// maximum pending; each request beyond it is answered at once with a DENY audited as
// `approval_queue_full` (one entry, and no `pending` entry). (Found by review, round 4: 300 held
// actions of 60 KiB each stayed pending for five minutes.)
import { request as httpRequest } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_PENDING } from '../../../sidecar/approvals/approval-queue.ts';
import { auditEntries, useSidecarAndUpstream } from '../reliability/harness.ts';

const POLICY = `agent: reliability
rules:
  - name: deploys-need-approval
    action: shell_exec
    conditions: { command: { starts_with: "npm run deploy" } }
    effect: REQUIRE_APPROVAL
`;
const EXTRA = 20;

const ctx = useSidecarAndUpstream({ policy: POLICY });

function held(
  port: number,
  i: number,
): { status: Promise<number>; body: Promise<string>; abort: () => void } {
  const payload = JSON.stringify({ type: 'shell_exec', command: `npm run deploy -- --tag ${i}` });
  const req = httpRequest({
    host: '127.0.0.1',
    port,
    method: 'POST',
    path: '/v1/evaluate',
    agent: false,
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
  });
  let text = '';
  const status = new Promise<number>((resolve) => {
    req.on('error', () => resolve(-1));
    req.on('response', (res) => {
      res.setEncoding('utf8');
      res.on('data', (c: string) => {
        text += c;
      });
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
  });
  req.end(payload);
  return { status, body: status.then(() => text), abort: () => req.destroy() };
}

describe('a flood of actions that need approval', () => {
  it(`keeps ${DEFAULT_MAX_PENDING} pending and refuses the rest at once (DENY, approval_queue_full)`, async () => {
    const { s } = ctx;
    const approvals = s.sidecar!.approvals;
    const requests = Array.from({ length: DEFAULT_MAX_PENDING + EXTRA }, (_, i) => held(s.port, i));
    const answered: number[] = [];
    requests.forEach((r, i) => void r.status.then(() => answered.push(i)));
    while (approvals.size + answered.length < requests.length) await sleep(10);

    expect(approvals.size).toBe(DEFAULT_MAX_PENDING);
    const refused = await Promise.all(answered.map(async (i) => JSON.parse(await requests[i]!.body)));
    expect(refused.map((b) => b.effect)).toEqual(Array(EXTRA).fill('DENY'));
    const ids = new Set(refused.map((b) => b.decision_id));

    const entries = (await auditEntries(s.auditPath)).filter((e) => ids.has(e.decision_id));
    expect(entries).toHaveLength(EXTRA);
    for (const e of entries)
      expect([e.effect, e.reason, e.extra?.['approval']]).toEqual(['DENY', 'approval_queue_full', undefined]);
    for (const r of requests) r.abort();
    while (approvals.size > 0) await sleep(10);
  });
});
