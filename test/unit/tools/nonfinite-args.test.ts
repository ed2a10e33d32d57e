// Arguments with a number literal that overflows to Infinity (valid JSON syntax, e.g. 1e400): no hash, signature or
// forwarded copy could carry them, so strict parsing refuses them before any decision. Before, an approval rule threw
// while hashing the action (HTTP 500, id null, nothing audited, a rate-limit slot spent) and an ALLOW rule blamed
// the upstream for a token the sidecar could not sign.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type FakeUpstream,
  rawPost,
  roleKeyFiles,
  rpc,
  type StartedSidecar,
  startFakeUpstream,
  startGatewaySidecar,
  tempDir,
} from './support.ts';

const POLICY = `version: 1
agent: "admin"
rules:
  - name: "held"
    action: tool_call
    conditions: { tool: { equals: "held" } }
    effect: REQUIRE_APPROVAL
    rate_limit: { max: 2, per: hour }
  - name: "echo"
    action: tool_call
    conditions: { tool: { equals: "echo" } }
    effect: ALLOW
`;

let dir: string;
let up: FakeUpstream;
let s: StartedSidecar;

beforeAll(async () => {
  dir = await tempDir('tools-nonfinite');
  const keys = await roleKeyFiles(dir);
  up = await startFakeUpstream([
    { name: 'held', behaviour: 'echo' },
    { name: 'echo', behaviour: 'echo' },
  ]);
  s = await startGatewaySidecar({
    policy: { text: POLICY },
    mcp: {
      upstreams: [{ name: 'fake', url: up.url }],
      context: { key_file: keys.privateFiles.get('admin') as string },
    },
    approvalTimeoutMs: 200,
  });
});

afterAll(async () => {
  await s?.close();
  await up?.close();
  await rm(dir, { recursive: true, force: true });
});

const call = (argsJson: string, id: number, tool = 'held') =>
  `{"jsonrpc":"2.0","id":${id},"method":"tools/call","params":{"name":"${tool}","arguments":${argsJson}}}`;

describe('tools/call arguments with non-finite numbers', () => {
  it.each([
    { note: '1e400', args: '{"user_id":"u-1","n":1e400}' },
    { note: '-1e400', args: '{"user_id":"u-1","n":-1e400}' },
  ])('$note: refused as a parse error before any decision or upstream call', async ({ args }) => {
    const calls = up.received.filter((m) => m.method === 'tools/call').length;
    const r = await rawPost(s.url, call(args, 41));
    expect(r.status).toBe(400);
    expect((r.json as { error: { code: number } }).error.code).toBe(-32700);
    expect(up.received.filter((m) => m.method === 'tools/call').length).toBe(calls);
  });

  it('on an ALLOW rule: not blamed on an upstream that was never contacted', async () => {
    const before = up.received.filter((m) => m.method === 'tools/call').length;
    const r = await rawPost(s.url, call('{"text":"hi","n":1e400}', 42, 'echo'));
    expect(up.received.filter((m) => m.method === 'tools/call').length).toBe(before);
    // The gateway could not sign these arguments; the upstream did nothing wrong.
    expect(r.json).not.toMatchObject({ error: { data: { code: 'SIDECAR_ERR_UPSTREAM_INVALID' } } });
  });

  it('such calls do not silently use up the rule rate limit: a normal call is still held for approval', async () => {
    // Two more overflowing calls (the limit is 2 per hour), then an ordinary one.
    await rawPost(s.url, call('{"n":1e400}', 1));
    await rawPost(s.url, call('{"n":1e400}', 2));
    const r = await rawPost(s.url, rpc('tools/call', { name: 'held', arguments: { user_id: 'u-1' } }, 3));
    // approvalTimeoutMs 200: a held call times out as an ordinary policy denial, not a rate-limit refusal.
    expect(r.json).toMatchObject({ error: { data: { code: 'SIDECAR_ERR_POLICY_DENIED' } } });
  });
});
