// The agent-facing wire fails closed: every malformed, ambiguous or unsupported message is refused before any
// decision, and nothing reaches the upstream.
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
agent: "basic-user"
rules:
  - name: "echo"
    action: tool_call
    conditions: { tool: { equals: "echo" } }
    effect: ALLOW
`;

let dir: string;
let upstream: FakeUpstream;
let s: StartedSidecar;

beforeAll(async () => {
  dir = await tempDir('mcp-wire');
  const keys = await roleKeyFiles(dir);
  upstream = await startFakeUpstream([{ name: 'echo', behaviour: 'echo' }]);
  s = await startGatewaySidecar({
    policy: { text: POLICY },
    mcp: {
      upstreams: [{ name: 'fake', url: upstream.url }],
      context: { key_file: keys.privateFiles.get('basic-user') as string },
      max_message_bytes: 4096,
    },
  });
});

afterAll(async () => {
  await s?.close();
  await upstream?.close();
  await rm(dir, { recursive: true, force: true });
});

const CALL = { name: 'echo', arguments: { text: 'hi' } };
const upstreamCalls = () => upstream.received.filter((m) => m.method === 'tools/call').length;

describe('requests refused before any decision', () => {
  const cases: ReadonlyArray<{
    note: string;
    body: string | Uint8Array;
    headers?: Record<string, string>;
    method?: string;
    status: number;
    rpc: number | null;
    code: string;
    id?: unknown;
  }> = [
    {
      note: 'duplicate keys (the second "name" would win in JSON.parse)',
      body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"hidden","name":"echo","arguments":{}}}',
      status: 400,
      rpc: -32700,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'duplicate keys inside arguments',
      body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"a","text":"b"}}}',
      status: 400,
      rpc: -32700,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'a batch (dropped in MCP 2025-06-18), even of allowed calls',
      body: `[${rpc('tools/call', CALL, 1)},${rpc('tools/call', CALL, 2)}]`,
      status: 400,
      rpc: -32600,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    { note: 'an empty batch', body: '[]', status: 400, rpc: -32600, code: 'SIDECAR_ERR_REQUEST_MALFORMED' },
    {
      note: 'not JSON',
      body: '{"jsonrpc":',
      status: 400,
      rpc: -32700,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'invalid UTF-8',
      body: new Uint8Array([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]),
      status: 400,
      rpc: -32700,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'trailing data after the message',
      body: `${rpc('tools/call', CALL)} {}`,
      status: 400,
      rpc: -32700,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'a JSON string',
      body: '"tools/call"',
      status: 400,
      rpc: -32600,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'wrong jsonrpc version',
      body: '{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"echo"}}',
      status: 400,
      rpc: -32600,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
      id: 1,
    },
    {
      note: 'an unknown top-level member',
      body: '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"},"agent":"admin"}',
      status: 400,
      rpc: -32600,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
      id: 1,
    },
    {
      note: 'a null id',
      body: '{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"echo"}}',
      status: 400,
      rpc: -32600,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'a fractional id',
      body: '{"jsonrpc":"2.0","id":1.5,"method":"ping"}',
      status: 400,
      rpc: -32600,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'a JSON-RPC response (the gateway never asked anything)',
      body: '{"jsonrpc":"2.0","id":1,"result":{}}',
      status: 400,
      rpc: -32600,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'too large',
      body: rpc('tools/call', { name: 'echo', arguments: { text: 'x'.repeat(8192) } }),
      status: 413,
      rpc: -32600,
      code: 'SIDECAR_ERR_REQUEST_TOO_LARGE',
    },
    {
      note: 'GET (no standalone stream)',
      body: '',
      method: 'GET',
      status: 405,
      rpc: -32600,
      code: 'SIDECAR_ERR_METHOD_NOT_ALLOWED',
    },
    {
      note: 'DELETE (no sessions)',
      body: '',
      method: 'DELETE',
      status: 405,
      rpc: -32600,
      code: 'SIDECAR_ERR_METHOD_NOT_ALLOWED',
    },
    {
      note: 'an Origin header (a browser page: DNS rebinding)',
      body: rpc('tools/call', CALL),
      headers: { origin: 'http://evil.example' },
      status: 403,
      rpc: -32600,
      code: 'SIDECAR_ERR_POLICY_DENIED',
    },
    {
      note: 'an unsupported MCP-Protocol-Version',
      body: rpc('tools/call', CALL),
      headers: { 'mcp-protocol-version': '2025-03-26' },
      status: 400,
      rpc: -32600,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'a notification outside notifications/*',
      body: '{"jsonrpc":"2.0","method":"tools/call","params":{"name":"echo"}}',
      status: 400,
      rpc: -32600,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
  ];

  it.each(cases)('$note -> $status', async (c) => {
    const before = upstreamCalls();
    const auditBefore = (await s.audit()).length;
    const r = await rawPost(s.url, c.body, c.headers, c.method);
    expect(r.status).toBe(c.status);
    expect(r.headers.get('content-type')).toBe('application/json');
    expect(r.json).toEqual({
      jsonrpc: '2.0',
      id: c.id ?? null,
      error: { code: c.rpc, message: expect.any(String), data: { code: c.code } },
    });
    if (c.status === 405) expect(r.headers.get('allow')).toBe('POST');
    expect(upstreamCalls()).toBe(before);
    expect((await s.audit()).length).toBe(auditBefore);
  });
});

describe('content types', () => {
  it.each([
    'application/json',
    'application/json; charset=utf-8',
    'Application/JSON',
    'application/json;charset=UTF-8',
    'application/json; charset="utf-8"',
  ])('accepts %j', async (type) => {
    const r = await rawPost(s.url, rpc('tools/call', CALL), { 'content-type': type });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ result: { content: [{ type: 'text', text: '{"text":"hi"}' }] } });
  });

  it.each([
    'text/plain',
    'application/json; charset=latin1',
    'application/jsonx',
    'application/json, text/plain',
    'application/x-www-form-urlencoded',
    'text/plain; a=application/json',
    'application/json; boundary=x',
    '',
  ])('refuses %j with 415', async (type) => {
    const before = upstreamCalls();
    const r = await rawPost(s.url, rpc('tools/call', CALL), { 'content-type': type });
    expect(r.status).toBe(415);
    expect(r.json).toMatchObject({ error: { data: { code: 'SIDECAR_ERR_UNSUPPORTED_MEDIA_TYPE' } } });
    expect(upstreamCalls()).toBe(before);
  });
});

describe('per-method behaviour', () => {
  it.each([
    { requested: '2025-11-25', answered: '2025-11-25' },
    { requested: '2025-06-18', answered: '2025-06-18' },
    { requested: '2025-03-26', answered: '2025-11-25' },
    { requested: '1999-01-01', answered: '2025-11-25' },
  ])(
    'initialize $requested -> $answered, answered by the gateway itself',
    async ({ requested, answered }) => {
      const before = upstream.received.length;
      const r = await rawPost(
        s.url,
        rpc('initialize', {
          protocolVersion: requested,
          capabilities: {},
          clientInfo: { name: 'raw', version: '0' },
        }),
      );
      expect(r.status).toBe(200);
      expect(r.headers.get('mcp-session-id')).toBeNull();
      expect(r.json).toEqual({
        jsonrpc: '2.0',
        id: 1,
        result: {
          protocolVersion: answered,
          capabilities: { tools: { listChanged: false } },
          serverInfo: { name: 'agent-sidecar', version: expect.any(String) },
        },
      });
      expect(upstream.received.length).toBe(before);
    },
  );

  it('ping is answered locally', async () => {
    const r = await rawPost(s.url, rpc('ping', undefined, 'p-1'));
    expect(r.json).toEqual({ jsonrpc: '2.0', id: 'p-1', result: {} });
  });

  it.each(['notifications/initialized', 'notifications/cancelled', 'notifications/roots/list_changed'])(
    '%s -> 202, not forwarded',
    async (method) => {
      const before = upstream.received.length;
      const r = await rawPost(s.url, JSON.stringify({ jsonrpc: '2.0', method, params: {} }));
      expect(r.status).toBe(202);
      expect(r.text).toBe('');
      expect(upstream.received.length).toBe(before);
    },
  );

  it.each([
    'resources/list',
    'resources/read',
    'resources/templates/list',
    'prompts/list',
    'prompts/get',
    'completion/complete',
    'sampling/createMessage',
    'logging/setLevel',
    'tasks/list',
    'tools/echo',
  ])('%s -> uniform method not found', async (method) => {
    const r = await rawPost(s.url, rpc(method, {}, 3));
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      jsonrpc: '2.0',
      id: 3,
      error: { code: -32601, message: 'Not found.', data: { code: 'SIDECAR_ERR_NOT_FOUND' } },
    });
  });

  it.each([
    { note: 'tools/call without a name', method: 'tools/call', params: { arguments: {} } },
    { note: 'tools/call with a numeric name', method: 'tools/call', params: { name: 5 } },
    {
      note: 'tools/call with an unknown param (task)',
      method: 'tools/call',
      params: { ...CALL, task: { ttl: 1 } },
    },
    { note: 'tools/call with array params', method: 'tools/call', params: [CALL] },
    { note: 'tools/list with a cursor it never issued', method: 'tools/list', params: { cursor: 'abc' } },
    { note: 'initialize without a protocol version', method: 'initialize', params: {} },
  ])('$note -> invalid params', async ({ method, params }) => {
    const before = upstreamCalls();
    const r = await rawPost(s.url, rpc(method, params, 4));
    expect(r.json).toMatchObject({
      id: 4,
      error: { code: -32602, data: { code: 'SIDECAR_ERR_REQUEST_MALFORMED' } },
    });
    expect(upstreamCalls()).toBe(before);
  });

  it('tools/call with non-object arguments is decided (DENY, audited), not forwarded', async () => {
    const before = upstreamCalls();
    const r = await rawPost(s.url, rpc('tools/call', { name: 'echo', arguments: ['hi'] }, 5));
    expect(r.json).toMatchObject({
      id: 5,
      error: { code: -32010, data: { code: 'SIDECAR_ERR_POLICY_DENIED' } },
    });
    const id = (r.json as { error: { data: { decision_id: string } } }).error.data.decision_id;
    expect((await s.audit()).find((e) => e.decision_id === id)).toMatchObject({
      effect: 'DENY',
      reason: 'malformed_action',
    });
    expect(upstreamCalls()).toBe(before);
  });

  it("sends the decision id as a header and never forwards the agent's own headers upstream", async () => {
    const r = await rawPost(s.url, rpc('tools/call', CALL), {
      authorization: 'Bearer agent-secret',
      cookie: 'session=agent',
      'x-agent-context': 'forged',
    });
    expect(r.headers.get('x-sidecar-decision-id')).toMatch(/^[0-9a-f-]{36}$/);
    const forwarded = upstream.received.filter((m) => m.method === 'tools/call').at(-1);
    expect(forwarded?.headers.authorization).toBeUndefined();
    expect(forwarded?.headers.cookie).toBeUndefined();
    expect(forwarded?.headers['x-agent-context']).not.toBe('forged');
  });
});
