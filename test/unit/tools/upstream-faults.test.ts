// Upstreams that answer in every allowed shape, and upstreams that misbehave: the agent gets the result or a clean
// JSON-RPC error (never the upstream's raw bytes), and the sidecar keeps serving.
import { rm } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyContextToken } from '../../../sidecar/identity/context-token.ts';
import {
  type FakeBehaviour,
  type FakeUpstream,
  rawPost,
  roleKeyFiles,
  rpc,
  SECRET_TEXT,
  type StartedSidecar,
  startFakeUpstream,
  startGatewaySidecar,
  tempDir,
} from './support.ts';

const BEHAVIOURS: FakeBehaviour[] = [
  'echo',
  'sse',
  'created',
  'accepted',
  'garbage',
  'duplicate-keys',
  'batch',
  'html',
  'huge',
  'huge-chunked',
  'reset',
  'hang',
  'rpc-error',
  'wrong-id',
  'bad-result',
  'sse-no-response',
];
const toolOf = (b: FakeBehaviour) => `t_${b.replaceAll('-', '_')}`;

const POLICY = `version: 1
agent: "support-agent"
rules:
  - name: "all-fake-tools"
    action: tool_call
    conditions: { tool: { in: ${JSON.stringify(BEHAVIOURS.map(toolOf))} } }
    effect: ALLOW
  - name: "down-tools"
    action: tool_call
    conditions: { tool: { equals: "down.lookup" } }
    effect: ALLOW
`;

let dir: string;
let keys: Awaited<ReturnType<typeof roleKeyFiles>>;
let upstream: FakeUpstream;
let doomed: FakeUpstream;
let s: StartedSidecar;

beforeAll(async () => {
  dir = await tempDir('mcp-faults');
  keys = await roleKeyFiles(dir);
  upstream = await startFakeUpstream(BEHAVIOURS.map((b) => ({ name: toolOf(b), behaviour: b })));
  doomed = await startFakeUpstream([{ name: 'lookup', behaviour: 'echo' }]);
  s = await startGatewaySidecar({
    policy: { text: POLICY },
    mcp: {
      upstreams: [
        {
          name: 'fake',
          url: upstream.url,
          timeout_ms: 300,
          headers: { authorization: 'Bearer upstream-credential', 'x-api-key': 'k-123' },
        },
        { name: 'down', url: doomed.url, namespace: 'down', timeout_ms: 300, audience: 'down-tools' },
      ],
      context: { key_file: keys.privateFiles.get('support-agent') as string, audience: 'fake-tools' },
    },
  });
  // The second upstream goes away after startup: its calls must fail cleanly.
  await doomed.close();
});

afterAll(async () => {
  await s?.close();
  await upstream?.close();
  await rm(dir, { recursive: true, force: true });
});

const call = (tool: string, id = 1) =>
  rawPost(s.url, rpc('tools/call', { name: tool, arguments: { text: 'hi' } }, id));

describe('upstream answers the gateway relays', () => {
  it.each(['echo', 'sse', 'created'] as const)('%s', async (b) => {
    const r = await call(toolOf(b));
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      jsonrpc: '2.0',
      id: 1,
      result: { content: [{ type: 'text', text: '{"text":"hi"}' }] },
    });
  });

  it('sends the upstream credentials and a context token for exactly this call', async () => {
    await call(toolOf('echo'));
    const got = upstream.received.filter((m) => m.method === 'tools/call').at(-1);
    expect(got?.headers.authorization).toBe('Bearer upstream-credential');
    expect(got?.headers['x-api-key']).toBe('k-123');
    const token = got?.headers['x-agent-context'];
    const publicKeys = keys.roleKeys;
    const verdict = await verifyContextToken(typeof token === 'string' ? token : undefined, {
      roleKeys: publicKeys,
      allowlist: { 'support-agent': [toolOf('echo')] },
      tool: toolOf('echo'),
      args: { text: 'hi' },
      audience: 'fake-tools',
    });
    expect(verdict).toMatchObject({
      ok: true,
      claims: { agent: 'support-agent', role: 'support-agent', sub: null },
    });
    // No token on anything but tools/call.
    const list = upstream.received.find((m) => m.method === 'tools/list');
    expect(list?.headers['x-agent-context']).toBeUndefined();
  });
});

describe('upstream faults become clean JSON-RPC errors', () => {
  it.each([
    { b: 'accepted', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'garbage', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'duplicate-keys', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'batch', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'html', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'huge', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'huge-chunked', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'rpc-error', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'wrong-id', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'bad-result', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'sse-no-response', code: 'SIDECAR_ERR_UPSTREAM_INVALID' },
    { b: 'reset', code: 'SIDECAR_ERR_UPSTREAM_UNREACHABLE' },
    { b: 'hang', code: 'SIDECAR_ERR_UPSTREAM_TIMEOUT' },
  ] as const)('$b -> $code, then the sidecar still serves', async ({ b, code }) => {
    const r = await call(toolOf(b), 9);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      jsonrpc: '2.0',
      id: 9,
      error: {
        code: -32011,
        message: expect.any(String),
        data: { code, decision_id: expect.stringMatching(/^[0-9a-f-]{36}$/) },
      },
    });
    expect(r.text).not.toContain('secret');
    expect(r.text).not.toContain(SECRET_TEXT);
    const ok = await call(toolOf('echo'), 10);
    expect(ok.json).toMatchObject({ id: 10, result: { content: [{ text: '{"text":"hi"}' }] } });
  });

  it('an upstream that went away -> UNREACHABLE; the other upstream keeps working', async () => {
    const r = await call('down.lookup');
    expect(r.json).toMatchObject({
      error: { code: -32011, data: { code: 'SIDECAR_ERR_UPSTREAM_UNREACHABLE' } },
    });
    expect((await call(toolOf('echo'))).json).toMatchObject({ result: {} });
    const h = await fetch(s.url.replace('/mcp', '/healthz'));
    expect(h.status).toBe(200);
  });

  it('the audit keeps the ALLOW decision; the failure is what the agent sees', async () => {
    const r = await call(toolOf('reset'), 11);
    const id = (r.json as { error: { data: { decision_id: string } } }).error.data.decision_id;
    expect((await s.audit()).find((e) => e.decision_id === id)).toMatchObject({ effect: 'ALLOW' });
  });
});

describe('sessions', () => {
  it('reconnects once when a stateful upstream forgets the session', async () => {
    const stateful = await startFakeUpstream([{ name: 't_echo', behaviour: 'echo' }], { sessions: true });
    const s2 = await startGatewaySidecar({
      policy: { text: POLICY },
      mcp: {
        upstreams: [{ name: 'stateful', url: stateful.url }],
        context: { key_file: keys.privateFiles.get('support-agent') as string },
      },
    });
    const first = await rawPost(s2.url, rpc('tools/call', { name: 't_echo', arguments: { text: 'a' } }));
    expect(first.json).toMatchObject({ result: {} });
    stateful.dropSessions();
    const second = await rawPost(s2.url, rpc('tools/call', { name: 't_echo', arguments: { text: 'b' } }));
    expect(second.json).toMatchObject({ result: { content: [{ text: '{"text":"b"}' }] } });
    expect(stateful.received.filter((m) => m.method === 'initialize')).toHaveLength(2);
    await s2.close();
    await stateful.close();
  });
});
