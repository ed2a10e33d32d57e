// The admin API over real listeners (TCP on port 0 and a unix socket): auth, approvals round trips, metrics.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import pino from 'pino';
import { Agent, request } from 'undici';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { ApprovalQueue } from '../../../sidecar/approvals/approval-queue.ts';
import { actionDigest } from '../../../sidecar/policy/policy.ts';
import { checkBearer, loadAdminToken } from '../../../sidecar/server/admin-auth.ts';
import type { AdminListener, ApprovalDecisionEvent } from '../../../sidecar/server/admin-listener.ts';
import { createAdminHandler, startAdminListener } from '../../../sidecar/server/admin-listener.ts';
import { createMetrics } from '../../../sidecar/server/metrics.ts';

const TOKEN = randomBytes(32).toString('base64url');
const ACTION = { type: 'tool_call', tool: 'refund', args: { order: 'A-17', amount: 40 } };
const HASH = actionDigest(ACTION);

let root: string;
let queue: ApprovalQueue;
let ready = true;
let decisions: ApprovalDecisionEvent[] = [];
let listener: AdminListener;
let base: string;
const dispatcher = new Agent();

function handler() {
  return createAdminHandler({
    token: TOKEN,
    approvals: queue,
    metrics: createMetrics(),
    logger: pino({ level: 'silent' }),
    ready: () => ready,
    onApprovalDecision: (e) => decisions.push(e),
  });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'admin-api-'));
});

// A fresh queue and listener per test. Timers never fire on their own: the queue resolves only through the API.
beforeEach(async () => {
  ready = true;
  decisions = [];
  queue = new ApprovalQueue({ setTimer: () => 0, clearTimer: () => undefined });
  listener = await startAdminListener({ host: '127.0.0.1', port: 0 }, handler());
  if (!('url' in listener.address)) throw new Error('expected a TCP address');
  base = listener.address.url;
});

afterEach(async () => {
  queue.cancelAll('test over');
  await listener.close();
});

afterAll(async () => {
  await dispatcher.close();
  await rm(root, { recursive: true, force: true });
});

interface CallOptions {
  readonly auth?: string | null;
  readonly body?: string;
  readonly contentType?: string;
}

async function call(method: string, path: string, opts: CallOptions = {}) {
  const headers: Record<string, string> = {};
  const auth = opts.auth === undefined ? `Bearer ${TOKEN}` : opts.auth;
  if (auth !== null) headers['authorization'] = auth;
  if (opts.body !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
  const res = await request(`${base}${path}`, {
    method: method as 'GET',
    headers,
    dispatcher,
    ...(opts.body === undefined ? {} : { body: opts.body }),
  });
  const text = await res.body.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text, json: json as Record<string, unknown> };
}

function errorCode(r: { json: Record<string, unknown> }): unknown {
  return (r.json?.['error'] as { code?: unknown } | undefined)?.code;
}

/** Holds one action (through the handler's own queue) and returns its promise and approval id. */
function hold(decisionId = 'dec-1') {
  const outcome = queue.request({
    decisionId,
    agent: 'helpdesk',
    rule: 'refunds-need-approval',
    action: ACTION,
    actionHash: HASH,
  });
  const id = queue.list().at(-1)!.id;
  return { outcome, id };
}

describe('checkBearer', () => {
  it.each([
    { note: 'exact', header: `Bearer ${TOKEN}`, ok: true },
    { note: 'scheme is case-insensitive', header: `bearer ${TOKEN}`, ok: true },
    { note: 'missing', header: undefined, ok: false },
    { note: 'empty', header: '', ok: false },
    { note: 'scheme only', header: 'Bearer', ok: false },
    { note: 'empty token', header: 'Bearer ', ok: false },
    { note: 'other scheme', header: `Basic ${TOKEN}`, ok: false },
    { note: 'no scheme', header: TOKEN, ok: false },
    { note: 'same length, different', header: `Bearer ${'A'.repeat(TOKEN.length)}`, ok: false },
    { note: 'prefix', header: `Bearer ${TOKEN.slice(0, -1)}`, ok: false },
    { note: 'longer', header: `Bearer ${TOKEN}x`, ok: false },
    { note: 'very long', header: `Bearer ${'x'.repeat(100_000)}`, ok: false },
    { note: 'one byte', header: 'Bearer x', ok: false },
    { note: 'non-ASCII', header: `Bearer ${'é'.repeat(50)}`, ok: false },
    { note: 'two tokens', header: `Bearer ${TOKEN} ${TOKEN}`, ok: false },
    { note: 'repeated header', header: [`Bearer ${TOKEN}`], ok: false },
  ])('$note', ({ header, ok }) => {
    expect(checkBearer(header, TOKEN)).toBe(ok);
  });
});

describe('loadAdminToken', () => {
  it('reads and trims the token', async () => {
    const file = join(root, 'token');
    await writeFile(file, `  ${TOKEN}\n`);
    await expect(loadAdminToken(file)).resolves.toBe(TOKEN);
  });

  it.each([
    { note: 'too short', content: 'x'.repeat(31) },
    { note: 'empty', content: '\n' },
    { note: 'inner whitespace', content: `${'x'.repeat(20)} ${'y'.repeat(20)}` },
    { note: 'not header-safe', content: `${'x'.repeat(40)}\u00e9` },
  ])('refuses a token file that is $note', async ({ content }) => {
    const file = join(root, 'bad-token');
    await writeFile(file, content);
    await expect(loadAdminToken(file)).rejects.toMatchObject({ code: 'SIDECAR_ERR_CONFIG_INVALID' });
  });

  it('refuses a missing file with a config error', async () => {
    await expect(loadAdminToken(join(root, 'absent'))).rejects.toMatchObject({
      code: 'SIDECAR_ERR_CONFIG_INVALID',
    });
  });
});

describe('admin API auth', () => {
  it('serves /healthz without a token, 503 while not ready', async () => {
    const ok = await call('GET', '/healthz', { auth: null });
    expect(ok.status).toBe(200);
    expect(ok.json).toEqual({ status: 'ok' });
    ready = false;
    const starting = await call('GET', '/healthz', { auth: null });
    expect(starting.status).toBe(503);
    expect(starting.json).toEqual({ status: 'not_ready' });
  });

  it.each([
    { note: 'missing', auth: null },
    { note: 'wrong, same length', auth: `Bearer ${'A'.repeat(TOKEN.length)}` },
    { note: 'wrong, short', auth: 'Bearer x' },
    { note: 'wrong, long', auth: `Bearer ${'x'.repeat(8_000)}` },
    { note: 'other scheme', auth: `Basic ${TOKEN}` },
  ])('refuses a $note token with 401 on every route, known or not', async ({ auth }) => {
    for (const [method, path] of [
      ['GET', '/metrics'],
      ['GET', '/v1/approvals'],
      ['POST', '/v1/approvals/x/approve'],
      ['GET', '/no-such-route'],
    ] as const) {
      const r = await call(method, path, { auth });
      expect(r.status, `${method} ${path}`).toBe(401);
      expect(errorCode(r)).toBe('SIDECAR_ERR_ADMIN_UNAUTHORIZED');
      expect(r.headers['www-authenticate']).toBe('Bearer');
    }
  });

  it('answers 404 and 405 only to an authenticated caller', async () => {
    const missing = await call('GET', '/no-such-route');
    expect(missing.status).toBe(404);
    expect(errorCode(missing)).toBe('SIDECAR_ERR_NOT_FOUND');
    const wrongMethod = await call('DELETE', '/v1/approvals');
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers['allow']).toBe('GET');
    const getApprove = await call('GET', '/v1/approvals/abc/approve');
    expect(getApprove.status).toBe(405);
    expect(getApprove.headers['allow']).toBe('POST');
  });
});

describe('admin API limits', () => {
  it('answers oversized headers with the uniform 431 error', async () => {
    const socket = connect(Number(new URL(base).port), '127.0.0.1');
    await once(socket, 'connect');
    socket.write(`GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: ${'a'.repeat(20 * 1024)}\r\n\r\n`);
    let raw = '';
    socket.setEncoding('utf8');
    for await (const chunk of socket) raw += chunk;
    expect(raw).toMatch(/^HTTP\/1\.1 431 /);
    expect(raw).toContain('"code":"SIDECAR_ERR_HEADERS_TOO_LARGE"');
  });
});

describe('admin API approvals', () => {
  it('lists, then approves the exact action while request() is pending; a replay is 404', async () => {
    const { outcome, id } = hold();
    const list = await call('GET', '/v1/approvals');
    expect(list.status).toBe(200);
    expect(list.headers['cache-control']).toBe('no-store');
    expect(list.json).toEqual({
      approvals: [
        {
          id,
          decision_id: 'dec-1',
          agent: 'helpdesk',
          rule: 'refunds-need-approval',
          action: ACTION,
          action_hash: HASH,
          created_at: expect.any(String),
          expires_at: expect.any(String),
        },
      ],
    });

    const approved = await call('POST', `/v1/approvals/${id}/approve`, {
      body: JSON.stringify({ approver: 'alice@ops', action_hash: HASH }),
    });
    expect(approved.status).toBe(200);
    expect(approved.json).toEqual({ id, decision_id: 'dec-1', outcome: 'approved', approver: 'alice@ops' });
    await expect(outcome).resolves.toEqual({ outcome: 'approved', approver: 'alice@ops' });
    expect(decisions).toEqual([{ id, decisionId: 'dec-1', approver: 'alice@ops', outcome: 'approved' }]);

    const replay = await call('POST', `/v1/approvals/${id}/approve`, {
      body: JSON.stringify({ approver: 'alice@ops', action_hash: HASH }),
    });
    expect(replay.status).toBe(404);
    expect(errorCode(replay)).toBe('SIDECAR_ERR_APPROVAL_NOT_FOUND');
    expect((await call('GET', '/v1/approvals')).json).toEqual({ approvals: [] });
  });

  it('refuses an approval for a different action hash with 400 and keeps it pending', async () => {
    const { outcome, id } = hold();
    const wrong = await call('POST', `/v1/approvals/${id}/approve`, {
      body: JSON.stringify({ approver: 'alice', action_hash: 'f'.repeat(64) }),
    });
    expect(wrong.status).toBe(400);
    expect(errorCode(wrong)).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
    expect(queue.list().map((p) => p.id)).toEqual([id]);
    expect(decisions).toEqual([]);

    const denied = await call('POST', `/v1/approvals/${id}/deny`, {
      body: JSON.stringify({ approver: 'bob' }),
    });
    expect(denied.status).toBe(200);
    expect(denied.json).toEqual({ id, decision_id: 'dec-1', outcome: 'denied', approver: 'bob' });
    await expect(outcome).resolves.toEqual({ outcome: 'denied', approver: 'bob' });
    expect(decisions).toEqual([{ id, decisionId: 'dec-1', approver: 'bob', outcome: 'denied' }]);
  });

  it('answers 404 for an id that never existed', async () => {
    hold();
    for (const id of ['00000000-0000-4000-8000-000000000000', 'not%2Fan%2Fid', 'x'.repeat(200)]) {
      const r = await call('POST', `/v1/approvals/${id}/deny`, { body: JSON.stringify({ approver: 'bob' }) });
      expect(r.status, id).toBe(404);
      expect(errorCode(r), id).toBe('SIDECAR_ERR_APPROVAL_NOT_FOUND');
    }
    expect(queue.size).toBe(1);
  });

  it.each([
    { note: 'malformed JSON', body: '{"approver":', status: 400, code: 'SIDECAR_ERR_REQUEST_MALFORMED' },
    { note: 'not an object', body: '["alice"]', status: 400, code: 'SIDECAR_ERR_REQUEST_MALFORMED' },
    { note: 'no approver', body: '{}', status: 400, code: 'SIDECAR_ERR_REQUEST_MALFORMED' },
    {
      note: 'an unknown member',
      body: '{"approver":"alice","also":"this"}',
      status: 400,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'a hash that is not one',
      body: '{"approver":"alice","action_hash":"abc"}',
      status: 400,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'an approver with a newline',
      body: '{"approver":"alice\\nforged"}',
      status: 400,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'an approver of 129 characters',
      body: JSON.stringify({ approver: 'a'.repeat(129) }),
      status: 400,
      code: 'SIDECAR_ERR_REQUEST_MALFORMED',
    },
    {
      note: 'a text/plain body',
      body: '{"approver":"alice"}',
      contentType: 'text/plain',
      status: 415,
      code: 'SIDECAR_ERR_UNSUPPORTED_MEDIA_TYPE',
    },
    {
      note: 'a body over 16 KiB',
      body: JSON.stringify({ approver: 'alice', pad: 'x'.repeat(17 * 1024) }),
      status: 413,
      code: 'SIDECAR_ERR_REQUEST_TOO_LARGE',
    },
  ])('refuses $note and leaves the approval pending', async ({ body, contentType, status, code }) => {
    const { id } = hold();
    const r = await call('POST', `/v1/approvals/${id}/approve`, {
      body,
      ...(contentType === undefined ? {} : { contentType }),
    });
    expect(r.status).toBe(status);
    expect(errorCode(r)).toBe(code);
    expect(queue.list().map((p) => p.id)).toEqual([id]);
  });

  it('refuses a chunked body over 16 KiB that declares no length', async () => {
    const { id } = hold();
    const chunks = Readable.from(
      (function* () {
        for (let i = 0; i < 20; i++) yield Buffer.alloc(1024, 0x20);
      })(),
    );
    const res = await request(`${base}/v1/approvals/${id}/approve`, {
      method: 'POST',
      dispatcher,
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: chunks,
    });
    expect(res.statusCode).toBe(413);
    await res.body.dump();
    expect(queue.size).toBe(1);
  });
});

describe('admin API metrics', () => {
  it('serves Prometheus text with the pending count', async () => {
    hold();
    const r = await call('GET', '/metrics');
    expect(r.status).toBe(200);
    expect(String(r.headers['content-type'])).toMatch(/^text\/plain/);
    expect(r.text).toContain('# TYPE sidecar_approvals_pending gauge');
    expect(r.text).toMatch(/^sidecar_approvals_pending 1$/m);
    expect(r.text).toContain('sidecar_decisions_total');
  });
});

describe('admin listener on a unix socket', () => {
  it('creates the socket 0600 and serves the API through it', async () => {
    const socketPath = join(root, 'admin.sock');
    const unix = await startAdminListener({ socketPath }, handler());
    const socketAgent = new Agent({ connect: { socketPath } });
    try {
      expect(unix.address).toEqual({ socketPath });
      expect((await stat(socketPath)).mode & 0o777).toBe(0o600);
      const { id } = hold();
      const res = await request('http://localhost/v1/approvals', {
        dispatcher: socketAgent,
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(res.statusCode).toBe(200);
      expect(((await res.body.json()) as { approvals: { id: string }[] }).approvals.map((a) => a.id)).toEqual(
        [id],
      );
      const anon = await request('http://localhost/v1/approvals', { dispatcher: socketAgent });
      expect(anon.statusCode).toBe(401);
      await anon.body.dump();
    } finally {
      await socketAgent.close();
      await unix.close();
    }
    await expect(stat(socketPath)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('replaces a stale socket left by a dead process', async () => {
    const socketPath = join(root, 'stale.sock');
    const child = spawn(
      process.execPath,
      ['-e', "require('net').createServer().listen(process.argv[1], () => console.log('up'))", socketPath],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    await once(child.stdout, 'data');
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect((await stat(socketPath)).isSocket()).toBe(true);

    const unix = await startAdminListener({ socketPath }, handler());
    expect((await stat(socketPath)).mode & 0o777).toBe(0o600);
    await unix.close();
  });

  it('refuses a path where something listens, or that is not a socket, and leaves it alone', async () => {
    const live = join(root, 'live.sock');
    const other = createServer();
    other.listen(live);
    await once(other, 'listening');
    try {
      await expect(startAdminListener({ socketPath: live }, handler())).rejects.toMatchObject({
        code: 'SIDECAR_ERR_LISTEN_FAILED',
      });
    } finally {
      other.close();
    }

    const file = join(root, 'not-a-socket');
    await writeFile(file, 'keep me');
    await expect(startAdminListener({ socketPath: file }, handler())).rejects.toMatchObject({
      code: 'SIDECAR_ERR_LISTEN_FAILED',
    });
    expect(await readFile(file, 'utf8')).toBe('keep me');
  });
});
