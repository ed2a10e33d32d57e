// Fuzzing the MCP gateway (/mcp) mounted in a real in-process sidecar, in front of a recording upstream that offers
// one tool the policy allows and one it hides. Random JSON-RPC bodies (structure-aware, with duplicate keys,
// batches, odd ids and methods) and random bytes. Invariants: the sidecar never answers 5xx to input and keeps
// serving; the hidden tool is never called upstream nor audited ALLOW; the upstream only ever gets a parsed,
// re-serialised call to the allowed tool that the chain holds as ALLOW; the same body always gets the same answer.
import { rm } from 'node:fs/promises';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyAuditFile } from '../../../sidecar/audit/verify.ts';
import {
  type FakeUpstream,
  rawPost,
  roleKeyFiles,
  type StartedSidecar,
  startFakeUpstream,
  startGatewaySidecar,
  tempDir,
} from '../tools/support.ts';

const RUNS = { numRuns: Number(process.env['FUZZ_RUNS'] ?? 300) };

const POLICY = `agent: basic-user
rules:
  - name: visible
    action: tool_call
    conditions: { tool: { equals: visible_tool } }
    effect: ALLOW
`;

let dir: string;
let upstream: FakeUpstream;
let s: StartedSidecar;

beforeAll(async () => {
  dir = await tempDir('mcp-fuzz');
  const keys = await roleKeyFiles(dir);
  upstream = await startFakeUpstream([
    { name: 'visible_tool', behaviour: 'echo' },
    { name: 'hidden_tool', behaviour: 'echo' },
  ]);
  s = await startGatewaySidecar({
    policy: { text: POLICY },
    mcp: {
      upstreams: [{ name: 'fake', url: upstream.url }],
      context: { key_file: keys.privateFiles.get('basic-user') as string },
    },
    auditSync: 'never',
  });
});

afterAll(async () => {
  await s?.close();
  await upstream?.close();
  await rm(dir, { recursive: true, force: true });
});

const TOOL_NAMES = [
  'visible_tool',
  'hidden_tool',
  'Hidden_tool',
  'hidden_tool ',
  'visible_tool\u0000',
  'fake.hidden_tool',
  '',
];
const METHODS = [
  'initialize',
  'ping',
  'tools/list',
  'tools/call',
  'notifications/initialized',
  'tools/call ',
  'resources/list',
];
const params = fc.oneof(
  fc.record(
    {
      name: fc.oneof(fc.constantFrom(...TOOL_NAMES), fc.string({ maxLength: 12 })),
      arguments: fc.oneof(
        fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
        fc.jsonValue({ maxDepth: 1 }),
      ),
      _meta: fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 2 }),
      extra: fc.constant(1),
    },
    { requiredKeys: [] },
  ),
  fc.jsonValue({ maxDepth: 2 }),
);
const message = fc.record(
  {
    jsonrpc: fc.constantFrom('2.0', '2.0', '2.0', '1.0', 2),
    id: fc.oneof(fc.integer(), fc.string({ maxLength: 6 }), fc.constant(null), fc.constant({ a: 1 })),
    method: fc.oneof(fc.constantFrom(...METHODS), fc.string({ maxLength: 10 })),
    params,
    result: fc.constant({}),
  },
  { requiredKeys: [] },
);
// The duplicate-key trick: a parser keeping the first `name` sees the visible tool, one keeping the last the hidden.
const smuggled = fc
  .tuple(fc.integer({ min: 1, max: 1000 }), fc.boolean())
  .map(
    ([id, hiddenFirst]) =>
      `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"${hiddenFirst ? 'hidden_tool' : 'visible_tool'}","arguments":{},"name":"${hiddenFirst ? 'visible_tool' : 'hidden_tool'}"}}`,
  );
// Well-formed calls, so the fuzz also exercises the forwarding path and not only the refusals.
const call = fc
  .record({
    id: fc.integer({ min: 0, max: 10_000 }),
    name: fc.constantFrom(...TOOL_NAMES),
    arguments: fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
  })
  .map((c) =>
    JSON.stringify({
      jsonrpc: '2.0',
      id: c.id,
      method: 'tools/call',
      params: { name: c.name, arguments: c.arguments },
    }),
  );
const body = fc.oneof(
  { weight: 3, arbitrary: call },
  { weight: 6, arbitrary: message.map((m) => JSON.stringify(m)) },
  { weight: 1, arbitrary: fc.array(message, { minLength: 1, maxLength: 3 }).map((b) => JSON.stringify(b)) },
  { weight: 1, arbitrary: smuggled },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 100 }) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v)) },
);

/** What must be the same when the same body is sent twice: status, and error code or result shape. */
function outcome(r: { status: number; json: unknown }): string {
  const j = r.json as { error?: { code?: unknown; data?: { code?: unknown } }; result?: unknown } | undefined;
  return JSON.stringify([r.status, j?.error?.code, j?.error?.data?.code, j?.result === undefined]);
}

describe('MCP gateway under random JSON-RPC', () => {
  it('never 5xx on input, never calls or allows the hidden tool, and answers the same body the same way', async () => {
    await fc.assert(
      fc.asyncProperty(body, async (text) => {
        const a = await rawPost(s.url, text);
        const b = await rawPost(s.url, text);
        expect(a.status).toBeLessThan(500);
        expect(outcome(b)).toBe(outcome(a));
        expect(a.text).not.toMatch(/hidden_tool|\n\s+at |Traceback/);
      }),
      RUNS,
    );
  });

  it('the upstream only ever received parsed calls to the allowed tool, each one audited ALLOW', async () => {
    const calls = upstream.received.filter((m) => m.method === 'tools/call');
    // The generator is biased so that well-formed calls to the allowed tool do get through.
    expect(calls.length).toBeGreaterThan(0);
    for (const c of calls) {
      const p = c.body['params'] as { name?: unknown; arguments?: unknown };
      expect(p.name).toBe('visible_tool');
      // Re-serialised by the gateway: a plain JSON object, not the agent's bytes.
      expect(typeof c.body).toBe('object');
      expect(c.body['jsonrpc']).toBe('2.0');
    }
    const entries = await s.audit();
    const allows = entries.filter((e) => e.kind === 'tool' && e.effect === 'ALLOW');
    for (const e of allows) expect(e.action?.tool).toBe('visible_tool');
    expect(
      entries.some((e) => e.effect === 'ALLOW' && e.action?.tool !== 'visible_tool' && e.kind === 'tool'),
    ).toBe(false);
    expect(calls.length).toBeLessThanOrEqual(allows.length);
  });

  it('afterwards the sidecar still serves and the chain verifies', async () => {
    const health = await fetch(s.url.replace(/\/mcp$/, '/healthz'));
    expect(health.status).toBe(200);
    const entries = await s.audit();
    const path = `${s.auditDir}/basic-user.audit.jsonl`;
    expect(await verifyAuditFile(path)).toMatchObject({ ok: true, count: entries.length });
  });
});
