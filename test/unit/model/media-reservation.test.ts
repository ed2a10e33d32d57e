// Images, documents, files and audio cost more than their bytes (one fetched by URL is a few bytes in the body), so
// each adds MEDIA_ITEM_TOKENS to the input estimate: concurrent calls with media stay within the documented overshoot.
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { anthropic } from '../../../sidecar/model/anthropic.ts';
import { MEDIA_ITEM_TOKENS } from '../../../sidecar/model/gateway.ts';
import { openai } from '../../../sidecar/model/openai.ts';
import type { JsonObject, VendorAdapter } from '../../../sidecar/model/vendor.ts';
import { BASE_POLICY, type GatewayUnderTest, startGateway } from './support.ts';

const POLICY = `${BASE_POLICY.replace(
  'model: { in: [',
  'model: { starts_with: "scripted-" }\n    effect: ALLOW\n  - name: stubs\n    action: model\n    conditions:\n      model: { in: [',
)}budgets:\n  - { name: daily, period: day, max_tokens: BUDGET }\n`;

let server: Server;
let upstream: string;
let forwarded = 0;
/** Input tokens the scripted upstream bills per call: an image or PDF fetched by URL costs far more than its bytes. */
let billedInput = 10;

async function readAll(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

beforeAll(async () => {
  server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    const body = JSON.parse(await readAll(req)) as Record<string, unknown>;
    forwarded++;
    await new Promise((r) => setTimeout(r, 150)); // every admitted call overlaps the others
    const text = JSON.stringify({
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: body['model'],
      content: [{ type: 'text', text: 'ok' }],
      stop_reason: 'end_turn',
      usage: { input_tokens: billedInput, output_tokens: 1 },
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  upstream = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const gw of open.splice(0)) await gw.close();
  server.close();
});
beforeEach(() => {
  forwarded = 0;
  billedInput = 10;
});

const open: GatewayUnderTest[] = [];
async function gateway(budget: number): Promise<GatewayUnderTest> {
  const gw = await startGateway(upstream, { policy: POLICY.replace('BUDGET', String(budget)) });
  open.push(gw);
  return gw;
}

const post = (gw: GatewayUnderTest, body: string) =>
  fetch(`${gw.url}/anthropic/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01', 'x-api-key': 'x' },
    body,
  });

const imageByUrl = JSON.stringify({
  model: 'scripted-a',
  max_tokens: 10,
  messages: [
    {
      role: 'user',
      content: [
        { type: 'image', source: { type: 'url', url: 'https://example.com/big.png' } },
        { type: 'text', text: 'describe' },
      ],
    },
  ],
});

describe('overshoot under concurrency', () => {
  it('keeps the overshoot within one call’s estimation error when media cost up to the ceiling', async () => {
    const budget = 20_000;
    const gw = await gateway(budget);
    billedInput = MEDIA_ITEM_TOKENS; // an image by URL, billed at the ceiling, from a ~200 byte request
    const results = await Promise.all(Array.from({ length: 10 }, () => post(gw, imageByUrl)));
    for (const r of results) await r.arrayBuffer();
    expect(results.filter((r) => r.status === 200).length).toBe(forwarded);
    const spent = gw.gateway.spend().budgets[0]?.spent_tokens ?? 0;
    const oneCallsError = billedInput + 1 - (Math.ceil(Buffer.byteLength(imageByUrl) / 4) + 10);
    expect(spent - budget).toBeLessThanOrEqual(oneCallsError);
  });

  it('reserves the ceiling for each media item on top of the bytes', async () => {
    const gw = await gateway(1_000_000);
    const res = await post(gw, imageByUrl);
    await res.arrayBuffer();
    const line = gw.logs.find((l) => l['msg'] === 'decision' && l['kind'] === 'model');
    const inputEstimate = Math.ceil(Buffer.byteLength(imageByUrl) / 4) + MEDIA_ITEM_TOKENS;
    expect(line?.['reserved']).toMatchObject({ tokens: inputEstimate + 10 });
  });
});

const prepared = (vendor: VendorAdapter, body: JsonObject) =>
  vendor.prepare(body, { defaultMaxTokens: 100, capOutput: true }).mediaItems;

describe('media items counted for the reservation', () => {
  it('anthropic: image and document blocks, whatever their source, also inside tool results and documents', () => {
    const image = (type: string) => ({ type: 'image', source: { type, url: 'u', file_id: 'f', data: 'd' } });
    const body = {
      messages: [
        { role: 'user', content: 'plain text' },
        {
          role: 'user',
          content: [
            image('url'),
            image('base64'),
            { type: 'document', source: { type: 'file', file_id: 'file_1' } },
            { type: 'text', text: 'image' },
            { type: 'tool_result', tool_use_id: 't', content: [image('url'), { type: 'text', text: 'x' }] },
            { type: 'document', source: { type: 'content', content: [image('url')] } },
          ],
        },
      ],
    };
    expect(prepared(anthropic, body)).toBe(6);
  });

  it('openai: image_url, file and input_audio parts', () => {
    const body = {
      messages: [
        { role: 'system', content: 'text' },
        {
          role: 'user',
          content: [
            { type: 'text', text: 'image_url' },
            { type: 'image_url', image_url: { url: 'https://example.com/a.png' } },
            { type: 'file', file: { file_id: 'file-1' } },
            { type: 'input_audio', input_audio: { data: 'AAAA', format: 'wav' } },
          ],
        },
      ],
    };
    expect(prepared(openai, body)).toBe(3);
  });

  it('a text-only request has none', () => {
    expect(
      prepared(anthropic, { messages: [{ role: 'user', content: [{ type: 'text', text: 'x' }] }] }),
    ).toBe(0);
    expect(prepared(openai, { messages: [{ role: 'user', content: 'x' }] })).toBe(0);
  });
});
