// What a refusal looks like to the agent: identical for hidden, unknown and denied tools, alike in timing, and
// rate limits and approvals applied by the enforcer to tool calls.
import { rm } from 'node:fs/promises';
import { McpError } from '@modelcontextprotocol/sdk/types.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';
import { percentile } from '../../../bench/lib.ts';
import {
  connectAgent,
  identityConfig,
  rawPost,
  roleKeyFiles,
  rpc,
  type StartedSidecar,
  startGatewaySidecar,
  startHelpdesk,
  startIdp,
  tempDir,
  withoutIds,
} from './support.ts';

let dir: string;
let keys: Awaited<ReturnType<typeof roleKeyFiles>>;
let helpdesk: HelpdeskToolServer;
let idp: Awaited<ReturnType<typeof startIdp>>;

beforeAll(async () => {
  dir = await tempDir('mcp-denials');
  keys = await roleKeyFiles(dir);
  helpdesk = await startHelpdesk(keys.roleKeys);
  idp = await startIdp(dir);
});

afterAll(async () => {
  await helpdesk?.close();
  await rm(dir, { recursive: true, force: true });
});

const CLASSES = {
  // Exposed to basic users, but not at this priority: the policy evaluates and denies.
  denied: { name: 'submit_ticket', arguments: { subject: 's', body: 'b', priority: 'high' } },
  // Offered upstream, never allowed for basic users, so absent from their tools/list.
  hidden: { name: 'delete_user', arguments: { user_id: 'u-1002' } },
  // Offered by no upstream at all.
  unknown: { name: 'drop_database', arguments: { user_id: 'u-1002' } },
} as const;
type Class = keyof typeof CLASSES;

describe('uniform denials (basic-user sidecar)', () => {
  let s: StartedSidecar;
  let auth: Record<string, string>;

  beforeAll(async () => {
    s = await startGatewaySidecar({
      policy: { file: 'basic-user.yaml' },
      mcp: {
        upstreams: [{ name: 'helpdesk', url: helpdesk.url }],
        context: { key_file: keys.privateFiles.get('basic-user') as string },
      },
      identity: identityConfig(idp.jwksFile),
    });
    auth = { authorization: `Bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' })}` };
  });
  afterAll(async () => {
    await s?.close();
  });

  it('hidden, unknown and denied tools get byte-identical errors apart from the ids; the upstream is never called', async () => {
    const before = helpdesk.calls.length;
    const answers = new Map<Class, Awaited<ReturnType<typeof rawPost>>>();
    for (const c of Object.keys(CLASSES) as Class[]) {
      answers.set(c, await rawPost(s.url, rpc('tools/call', CLASSES[c], 7), auth));
    }
    const [first, ...rest] = [...answers.values()];
    expect(first?.status).toBe(200);
    expect(first?.json).toMatchObject({
      jsonrpc: '2.0',
      id: 7,
      error: {
        code: -32010,
        message: 'The action was denied by policy.',
        data: { code: 'SIDECAR_ERR_POLICY_DENIED' },
      },
    });
    const headerNames = (r: typeof first) =>
      [...(r?.headers.keys() ?? [])].filter((h) => h !== 'date' && h !== 'keep-alive').sort();
    for (const r of rest) {
      expect(withoutIds(r.text)).toBe(withoutIds(first?.text ?? ''));
      expect(r.text.length).toBe(first?.text.length);
      expect(r.status).toBe(first?.status);
      expect(headerNames(r)).toEqual(headerNames(first));
      expect(r.headers.get('content-length')).toBe(first?.headers.get('content-length'));
    }
    expect(helpdesk.calls.length).toBe(before);
    for (const name of ['submit_ticket', 'delete_user', 'drop_database']) {
      expect(first?.text).not.toContain(name);
    }
    // Each one audited as a DENY, with the real reason for the operator.
    const audit = await s.audit();
    const reasons = Object.fromEntries(
      [...answers].map(([c, r]) => {
        const id = (r.json as { error: { data: { decision_id: string } } }).error.data.decision_id;
        return [c, audit.find((e) => e.decision_id === id)?.reason];
      }),
    );
    expect(reasons).toEqual({
      denied: 'no_rule_matched',
      hidden: 'no_rule_matched',
      unknown: 'unknown_tool',
    });
  });

  it('takes alike time for hidden, unknown and denied tools (200 calls each, interleaved)', async () => {
    const N = 200;
    const samples: Record<Class, number[]> = { denied: [], hidden: [], unknown: [] };
    const bodies = Object.fromEntries(
      (Object.keys(CLASSES) as Class[]).map((c) => [c, rpc('tools/call', CLASSES[c], 1)]),
    ) as Record<Class, string>;
    // Warm-up, then round-robin so drift (GC, disk) lands on every class alike.
    for (const c of Object.keys(CLASSES) as Class[])
      for (let i = 0; i < 10; i++) await rawPost(s.url, bodies[c], auth);
    for (let i = 0; i < N; i++) {
      for (const c of Object.keys(CLASSES) as Class[]) {
        const t0 = performance.now();
        const r = await rawPost(s.url, bodies[c], auth);
        samples[c].push(performance.now() - t0);
        expect(r.status).toBe(200);
      }
    }
    const stats = Object.fromEntries(
      Object.entries(samples).map(([c, xs]) => {
        const sorted = [...xs].sort((a, b) => a - b);
        return [
          c,
          {
            p25: percentile(sorted, 25),
            p50: percentile(sorted, 50),
            p75: percentile(sorted, 75),
            p90: percentile(sorted, 90),
          },
        ];
      }),
    ) as Record<Class, { p25: number; p50: number; p75: number; p90: number }>;
    console.log(
      'denial timing (ms):',
      Object.entries(stats)
        .map(
          ([c, q]) =>
            `${c} p25=${q.p25.toFixed(3)} p50=${q.p50.toFixed(3)} p75=${q.p75.toFixed(3)} p90=${q.p90.toFixed(3)}`,
        )
        .join(' | '),
    );
    // Relative only: the medians of the three classes sit within a factor of 1.5 of each other, and each class
    // has a fair share of its samples under the pooled median (no class is systematically faster or slower).
    const medians = Object.values(stats).map((q) => q.p50);
    expect(Math.max(...medians) / Math.min(...medians)).toBeLessThan(1.5);
    const pooled = percentile(
      Object.values(samples)
        .flat()
        .sort((a, b) => a - b),
      50,
    );
    for (const xs of Object.values(samples)) {
      const below = xs.filter((x) => x <= pooled).length / xs.length;
      expect(below).toBeGreaterThan(0.25);
      expect(below).toBeLessThan(0.75);
    }
  });
});

describe('rate limits and approvals on tool calls', () => {
  it('delete_user at most 3 per hour: the 4th is rate_limited and never reaches the tool server', async () => {
    const s = await startGatewaySidecar({
      policy: {
        text: `version: 1
agent: "admin"
rules:
  - name: "delete-user-limited"
    action: tool_call
    conditions: { tool: { equals: "delete_user" } }
    effect: ALLOW
    rate_limit: { max: 3, per: hour }
`,
      },
      mcp: {
        upstreams: [{ name: 'helpdesk', url: helpdesk.url }],
        context: { key_file: keys.privateFiles.get('admin') as string },
      },
    });
    const agent = await connectAgent(s.url);
    for (const user of ['u-1002', 'u-1003', 'u-1004']) {
      const r = await agent.callTool({ name: 'delete_user', arguments: { user_id: user } });
      expect(r.isError ?? false).toBe(false);
      expect(helpdesk.db.getUser(user)).toBeUndefined();
    }
    const before = helpdesk.calls.length;
    const err = (await agent
      .callTool({ name: 'delete_user', arguments: { user_id: 'u-1005' } })
      .catch((e: unknown) => e)) as McpError;
    expect(err).toBeInstanceOf(McpError);
    expect(err.code).toBe(-32010);
    expect(err.data).toMatchObject({ code: 'SIDECAR_ERR_RATE_LIMITED' });
    expect(helpdesk.calls.length).toBe(before);
    expect(helpdesk.db.getUser('u-1005')).toBeDefined();
    const id = (err.data as { decision_id: string }).decision_id;
    expect((await s.audit()).find((e) => e.decision_id === id)).toMatchObject({
      effect: 'DENY',
      rule: 'delete-user-limited',
      reason: 'rate_limited',
    });
    await agent.close();
    await s.close();
  });

  describe('admin delete_user is held for a human', () => {
    let s: StartedSidecar;
    beforeAll(async () => {
      s = await startGatewaySidecar({
        policy: { file: 'admin.yaml' },
        mcp: {
          upstreams: [{ name: 'helpdesk', url: helpdesk.url }],
          context: { key_file: keys.privateFiles.get('admin') as string },
        },
        identity: identityConfig(idp.jwksFile),
      });
    });
    afterAll(async () => {
      await s?.close();
    });

    async function pending() {
      for (let i = 0; i < 2_000; i++) {
        const list = s.sidecar.approvals.list();
        if (list.length > 0) return list;
        await new Promise((r) => setTimeout(r, 5));
      }
      throw new Error('no approval became pending');
    }

    it.each([
      { outcome: 'approve', approver: 'alice@helpdesk' },
      { outcome: 'deny', approver: 'bob@helpdesk' },
    ] as const)('$outcome', async ({ outcome, approver }) => {
      const user = outcome === 'approve' ? 'u-1005' : 'u-1001';
      const agent = await connectAgent(s.url, await idp.issue({ sub: 'admin-1', role: 'admin' }));
      const before = helpdesk.calls.length;
      const call = agent.callTool({ name: 'delete_user', arguments: { user_id: user } }).then(
        (r) => ({ ok: true as const, r }),
        (e: unknown) => ({ ok: false as const, e: e as McpError }),
      );
      const [held] = await pending();
      expect(held?.action).toMatchObject({ type: 'tool_call', tool: 'delete_user', args: { user_id: user } });
      expect(helpdesk.calls.length).toBe(before);
      const resolved =
        outcome === 'approve'
          ? s.sidecar.approvals.approve(held?.id as string, approver, held?.actionHash)
          : s.sidecar.approvals.deny(held?.id as string, approver);
      expect(resolved.ok).toBe(true);
      const done = await call;
      const audit = await s.audit();
      const decided = audit.filter((e) => e.decision_id === held?.decisionId);
      expect(decided.map((e) => e.kind)).toEqual(['tool', 'approval']);
      expect(decided[1]?.extra).toMatchObject({ approver });
      if (outcome === 'approve') {
        expect(done.ok).toBe(true);
        expect(helpdesk.db.getUser(user)).toBeUndefined();
        // The tool server's token names the decision the human approved.
        expect(helpdesk.calls.at(-1)).toMatchObject({
          tool: 'delete_user',
          role: 'admin',
          sub: 'admin-1',
          ok: true,
        });
        expect(helpdesk.calls.at(-1)?.decisionId).toBe(held?.decisionId);
      } else {
        expect(done.ok).toBe(false);
        expect(!done.ok && done.e.data).toMatchObject({
          code: 'SIDECAR_ERR_POLICY_DENIED',
          decision_id: held?.decisionId,
        });
        expect(helpdesk.db.getUser(user)).toBeDefined();
        expect(helpdesk.calls.length).toBe(before);
      }
      await agent.close();
    });

    it('an agent that goes away while its call is held: cancelled, audited, never forwarded', async () => {
      const token = await idp.issue({ sub: 'admin-1', role: 'admin' });
      const before = helpdesk.calls.length;
      const ac = new AbortController();
      const gone = fetch(s.url, {
        method: 'POST',
        body: rpc('tools/call', { name: 'delete_user', arguments: { user_id: 'u-1001' } }),
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        signal: ac.signal,
      }).catch(() => 'aborted');
      const [held] = await pending();
      ac.abort();
      expect(await gone).toBe('aborted');
      let decided: Awaited<ReturnType<StartedSidecar['audit']>> = [];
      for (let i = 0; i < 2_000 && decided.length < 2; i++) {
        decided = (await s.audit()).filter((e) => e.decision_id === held?.decisionId);
        if (decided.length < 2) await new Promise((r) => setTimeout(r, 5));
      }
      expect(decided[1]).toMatchObject({
        kind: 'approval',
        effect: 'DENY',
        extra: { approval: 'cancelled' },
      });
      expect(s.sidecar.approvals.list()).toHaveLength(0);
      expect(helpdesk.calls.length).toBe(before);
      expect(helpdesk.db.getUser('u-1001')).toBeDefined();
    });
  });
});
