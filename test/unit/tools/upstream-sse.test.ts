// How the gateway reads an upstream's SSE answer to tools/call (sidecar/tools/upstream.ts: readSseResponse,
// sseEvents, SseParser). The stream is parsed as its bytes arrive (strict UTF-8, strict JSON, max_message_bytes over
// the whole stream), and:
// - the first JSON-RPC response with the request's id is relayed at once and the stream is closed by the gateway:
//   an upstream may leave it open (the spec says it SHOULD close it, not MUST), and a TIMEOUT for a tool that ran
//   and answered would invite a retry. Whatever follows that response (a second response, a request) is never read;
// - notifications and responses to other ids before it are skipped;
// - a request from the upstream (elicitation, sampling, ...) can never be answered (the gateway advertises no client
//   capabilities): SIDECAR_ERR_UPSTREAM_INVALID at once, not a wait for timeout_ms;
// - a stream that ends without the response, that is not UTF-8 or that passes the size cap before the response is
//   SIDECAR_ERR_UPSTREAM_INVALID.
import { rm } from 'node:fs/promises';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SidecarError } from '../../../sidecar/errors.ts';
import { SseParser, sseEvents } from '../../../sidecar/tools/upstream.ts';
import { rawPost, roleKeyFiles, rpc, type StartedSidecar, startGatewaySidecar, tempDir } from './support.ts';

const TIMEOUT_MS = 1_000;
const MAX_BYTES = 64 * 1024;

type Streamer = (id: unknown, res: ServerResponse) => void;
const ok = (id: unknown, text: string) =>
  JSON.stringify({ jsonrpc: '2.0', id, result: { content: [{ type: 'text', text }] } });
const event = (payload: string) => `event: message\ndata: ${payload}\n\n`;
const elicitation = JSON.stringify({
  jsonrpc: '2.0',
  id: 99,
  method: 'elicitation/create',
  params: { message: 'confirm?', requestedSchema: { type: 'object', properties: {} } },
});
const progress = JSON.stringify({
  jsonrpc: '2.0',
  method: 'notifications/progress',
  params: { progressToken: 1, progress: 1 },
});
const sse = (res: ServerResponse) => res.writeHead(200, { 'content-type': 'text/event-stream' });

/** Resolved when the upstream sees the gateway close a stream it left open. */
const closedByGateway = new Map<string, Promise<void>>();
const leftOpen = (tool: string, res: ServerResponse) => {
  closedByGateway.set(tool, new Promise<void>((r) => res.on('close', () => r())));
};

const STREAMS: Record<string, Streamer> = {
  // The response, then the stream stays open.
  sse_left_open: (id, res) => {
    leftOpen('sse_left_open', res);
    sse(res);
    res.write(event(progress));
    res.write(event(ok(id, 'done')));
  },
  // The response cut into pieces: a CRLF and a multi-byte character split between writes, then left open.
  sse_split: (id, res) => {
    leftOpen('sse_split', res);
    sse(res);
    const bytes = Buffer.from(`event: message\r\ndata: ${ok(id, 'dün')}\r\n\r\n`);
    const cuts = [0, 15, bytes.indexOf('ü') + 1, bytes.length - 3, bytes.length - 1, bytes.length];
    void (async () => {
      for (let i = 1; i < cuts.length; i++) {
        res.write(bytes.subarray(cuts[i - 1], cuts[i]));
        await sleep(20);
      }
    })();
  },
  // A server-to-client request the gateway can never answer, then a wait for it.
  sse_elicitation: (_id, res) => {
    sse(res);
    res.write(event(elicitation));
  },
  // The same request after the response: never read, the response is relayed.
  sse_response_then_request: (id, res) => {
    leftOpen('sse_response_then_request', res);
    sse(res);
    res.write(event(ok(id, 'answered')) + event(elicitation));
  },
  // Two responses to one request in one write: the first is relayed, the second never read.
  sse_two_responses: (id, res) => {
    sse(res);
    res.end(event(ok(id, 'first')) + event(ok(id, 'second')));
  },
  // Not UTF-8 before the response, then left open.
  sse_not_utf8: (id, res) => {
    sse(res);
    res.write(Buffer.concat([Buffer.from('data: "'), Buffer.from([0xff]), Buffer.from('"\n\n')]));
    res.write(event(ok(id, 'late')));
  },
  // Notifications past max_message_bytes and no response, left open.
  sse_oversized: (_id, res) => {
    sse(res);
    const padding = `: ${'x'.repeat(1_000)}\n`;
    for (let i = 0; i < (MAX_BYTES * 2) / padding.length; i++) res.write(padding);
  },
  // The stream ends without the response.
  sse_no_response: (_id, res) => {
    sse(res);
    res.end(event(progress));
  },
};

let dir: string;
let s: StartedSidecar;
const upstream = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    if (req.method !== 'POST') return void res.writeHead(405).end();
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
    const id = body['id'];
    const json = (p: unknown) =>
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(p));
    if (id === undefined) return void res.writeHead(202).end();
    if (body['method'] === 'initialize') {
      return json({
        jsonrpc: '2.0',
        id,
        result: {
          protocolVersion: '2025-11-25',
          capabilities: { tools: {} },
          serverInfo: { name: 'sse', version: '0' },
        },
      });
    }
    if (body['method'] === 'tools/list') {
      return json({
        jsonrpc: '2.0',
        id,
        result: { tools: Object.keys(STREAMS).map((name) => ({ name, inputSchema: { type: 'object' } })) },
      });
    }
    STREAMS[(body['params'] as { name: string }).name]?.(id, res);
  });
});

beforeAll(async () => {
  dir = await tempDir('mcp-upstream-sse');
  const keys = await roleKeyFiles(dir);
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  s = await startGatewaySidecar({
    policy: {
      text: `version: 1
agent: "support-agent"
rules:
  - name: "all"
    action: tool_call
    conditions: { tool: { in: ${JSON.stringify(Object.keys(STREAMS))} } }
    effect: ALLOW
`,
    },
    mcp: {
      upstreams: [
        {
          name: 'sse',
          url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}/mcp`,
          timeout_ms: TIMEOUT_MS,
        },
      ],
      max_message_bytes: MAX_BYTES,
      context: { key_file: keys.privateFiles.get('support-agent') as string },
    },
  });
});

afterAll(async () => {
  await s?.close();
  await new Promise<void>((r) => {
    upstream.close(() => r());
    upstream.closeAllConnections();
  });
  await rm(dir, { recursive: true, force: true });
});

// A call that waited out the upstream timeout would answer SIDECAR_ERR_UPSTREAM_TIMEOUT: the answer's code (or
// its result) is what shows it did not wait, so no case measures time.
const call = async (name: string) => {
  const r = await rawPost(s.url, rpc('tools/call', { name, arguments: {} }, 5));
  return { json: r.json };
};
const relayed = (text: string) => ({ jsonrpc: '2.0', id: 5, result: { content: [{ type: 'text', text }] } });

describe('upstream SSE answers to tools/call', () => {
  it.each([
    { tool: 'sse_left_open', text: 'done' },
    { tool: 'sse_split', text: 'dün' },
    { tool: 'sse_response_then_request', text: 'answered' },
  ])(
    '$tool: relays the response as soon as it arrives and closes the open stream',
    async ({ tool, text }) => {
      // The tool ran and answered; a TIMEOUT here would invite the agent to run a non-idempotent tool again.
      const r = await call(tool);
      expect(r.json).toEqual(relayed(text));
      await closedByGateway.get(tool);
    },
  );

  it('two responses with the request id: the first is relayed, the rest of the stream is not read', async () => {
    expect((await call('sse_two_responses')).json).toEqual(relayed('first'));
  });

  it.each([
    // The gateway can never answer the elicitation: an error at once, not a wait for the upstream timeout.
    { tool: 'sse_elicitation' },
    { tool: 'sse_not_utf8' },
    { tool: 'sse_oversized' },
    { tool: 'sse_no_response' },
  ])('$tool -> SIDECAR_ERR_UPSTREAM_INVALID before the timeout', async ({ tool }) => {
    const r = await call(tool);
    expect(r.json).toMatchObject({
      id: 5,
      error: { code: -32011, data: { code: 'SIDECAR_ERR_UPSTREAM_INVALID' } },
    });
  });
});

describe('SseParser', () => {
  const parse = (pieces: string[]) => {
    const p = new SseParser();
    return [...pieces.flatMap((t) => p.push(t)), ...p.end()];
  };

  it('splits events on any line end, also cut between pieces', () => {
    const text = 'data: a\r\n\r\ndata: b\r\rdata: c\n\ndata: d\r\n\r\n';
    const whole = parse([text]);
    expect(whole).toEqual(['a', 'b', 'c', 'd']);
    for (let i = 0; i <= text.length; i++) expect(parse([text.slice(0, i), text.slice(i)])).toEqual(whole);
    expect(parse([...text])).toEqual(whole);
  });

  it('joins data lines, skips comments, empty data and other event types, drops an unfinished event', () => {
    expect(
      parse([
        ': comment\ndata: x\ndata:y\n\n',
        'event: ping\ndata: no\n\n',
        'data:\n\n',
        'event: message\nid: 1\ndata: z\n\n',
        'data: unfinished\n',
      ]),
    ).toEqual(['x\ny', 'z']);
    // A final CR ends the blank line at end of stream.
    expect(parse(['data: q\r\r'])).toEqual(['q']);
  });
});

describe('sseEvents', () => {
  const fail = (_code: string, detail: string) => new SidecarError('SIDECAR_ERR_UPSTREAM_INVALID', detail);
  async function* body(...chunks: Uint8Array[]) {
    yield* chunks;
  }
  const all = async (it: AsyncIterable<string>) => {
    const out: string[] = [];
    for await (const x of it) out.push(x);
    return out;
  };

  it('decodes a character cut between chunks, and refuses bad UTF-8 and a cut one at the end', async () => {
    const bytes = Buffer.from('data: ü\n\n');
    const cut = bytes.indexOf(0xbc);
    expect(await all(sseEvents(body(bytes.subarray(0, cut), bytes.subarray(cut)), 100, fail))).toEqual(['ü']);
    await expect(all(sseEvents(body(Buffer.from([0x64, 0xff, 0x0a])), 100, fail))).rejects.toThrow(
      /not UTF-8/,
    );
    await expect(all(sseEvents(body(bytes.subarray(0, cut)), 100, fail))).rejects.toThrow(/not UTF-8/);
  });

  it('counts the whole stream against the cap', async () => {
    const chunk = Buffer.from('data: 1\n\n');
    expect(await all(sseEvents(body(chunk, chunk), chunk.length * 2, fail))).toEqual(['1', '1']);
    await expect(all(sseEvents(body(chunk, chunk), chunk.length * 2 - 1, fail))).rejects.toThrow(
      /max_message_bytes/,
    );
  });

  it('stops reading the body when the reader stops', async () => {
    let pulled = 0;
    async function* endless() {
      for (;;) {
        pulled++;
        yield Buffer.from('data: 1\n\n');
      }
    }
    for await (const _ of sseEvents(endless(), 1_000, fail)) break;
    expect(pulled).toBe(1);
  });
});
