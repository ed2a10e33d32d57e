// The policy file replaced by garbage, truncated, or deleted while requests are running: the policy in force keeps
// serving, and no request sees anything but that policy's own decision. A valid file then takes over atomically.
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  auditEntries,
  evaluate,
  policyText,
  type SidecarUnderTest,
  startInProcess,
  underLoad,
  verifyChain,
} from './harness.ts';

let s: SidecarUnderTest | undefined;
afterEach(async () => {
  await s?.close();
  s = undefined;
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Answer {
  readonly path: string;
  readonly status: number;
  readonly effect: unknown;
  readonly error: unknown;
  readonly decisionId: unknown;
}

async function reloads(sut: SidecarUnderTest, result: string): Promise<number> {
  const m = await sut.metrics.reloads.get();
  return m.values.find((v) => v.labels['result'] === result)?.value ?? 0;
}

const GARBAGE = [
  '\u0000\u0001\u0002 not yaml at all {{{',
  'agent: reliability\nrules:\n  - name: x\n    action: file_read\n    effect: ALLOW\n    conditions: { path: { starts_with: relative } }\n',
  'agent: someone-else\nrules: []\n',
  'rules: [',
  '',
];

describe('policy file faults under load (watching the file, as `run` does by default)', () => {
  it('garbage, an empty file, a foreign agent and a deletion are all refused; the old policy keeps deciding', async () => {
    s = await startInProcess({ watchPolicy: true });
    const sut = s;
    const dir = join(sut.policyPath, '..');
    const answers = await underLoad(
      8,
      async (i): Promise<Answer> => {
        // Alternate an action the policy allows and one it denies.
        const path = i % 2 === 0 ? `/data/r${i}` : `/srv/r${i}`;
        const r = await evaluate(sut.url, { type: 'file_read', path });
        return {
          path,
          status: r.status,
          effect: r.body['effect'],
          error: r.body['error'],
          decisionId: r.body['decision_id'],
        };
      },
      async () => {
        await sleep(200);
        for (const text of GARBAGE) {
          // In place (truncate then write: a reader can see the empty file) and by rename (what editors do).
          await writeFile(sut.policyPath, text);
          await sleep(250);
          await writeFile(join(dir, 'next.yaml'), text);
          await rename(join(dir, 'next.yaml'), sut.policyPath);
          await sleep(250);
        }
        await rm(sut.policyPath);
        await sleep(400);
      },
    );

    expect(answers.length).toBeGreaterThan(100);
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.effect).toBe(a.path.startsWith('/data/') ? 'ALLOW' : 'DENY');
      // A DENY is the policy's own (no error other than the plain denial).
      if (a.effect === 'DENY') expect(a.error).toEqual({ code: 'SIDECAR_ERR_POLICY_DENIED' });
    }
    expect(await reloads(sut, 'rejected')).toBeGreaterThanOrEqual(GARBAGE.length);
    expect(await reloads(sut, 'applied')).toBe(0);
    // One digest throughout.
    const digests = new Set((await auditEntries(sut.auditPath)).map((e) => e.policy_digest));
    expect(digests.size).toBe(1);
    expect(await verifyChain(sut.auditPath)).toMatchObject({ ok: true });
  });

  it('after the garbage, a valid new policy takes over atomically: every answer is the old or the new decision', async () => {
    s = await startInProcess({ watchPolicy: true });
    const sut = s;
    const answers = await underLoad(
      8,
      async (i): Promise<Answer & { digest?: unknown }> => {
        const path = `/srv/x${i}`;
        const r = await evaluate(sut.url, { type: 'file_read', path });
        return {
          path,
          status: r.status,
          effect: r.body['effect'],
          error: r.body['error'],
          decisionId: r.body['decision_id'],
        };
      },
      async () => {
        await writeFile(sut.policyPath, 'garbage: [');
        await sleep(300);
        await writeFile(sut.policyPath, policyText({ readPrefix: '/srv' }));
        for (let i = 0; i < 40 && (await reloads(sut, 'applied')) === 0; i++) await sleep(50);
        await sleep(200);
      },
    );
    expect(await reloads(sut, 'applied')).toBe(1);
    // /srv was denied under the old policy and allowed under the new one; the audit says which policy decided.
    const byId = new Map((await auditEntries(sut.auditPath)).map((e) => [e.decision_id, e]));
    const digests = new Set<unknown>();
    for (const a of answers) {
      expect(a.status).toBe(200);
      const entry = byId.get(a.decisionId as string);
      expect(entry?.effect).toBe(a.effect);
      digests.add(entry?.policy_digest);
    }
    expect(digests.size).toBe(2);
    expect(answers.at(-1)?.effect).toBe('ALLOW');
    // Once the new policy answered, the old one never answers again.
    const firstNew = answers.findIndex((a) => a.effect === 'ALLOW');
    const lastOld = answers.findLastIndex((a) => a.effect === 'DENY');
    expect(lastOld - firstNew).toBeLessThan(8); // at most the requests already in flight at the swap
    expect(await verifyChain(sut.auditPath)).toMatchObject({ ok: true });
  });
});
