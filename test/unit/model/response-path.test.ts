import type { IncomingMessage, ServerResponse } from 'node:http';
import { gzipSync } from 'node:zlib';
import { request } from 'undici';
import { describe, expect, it, vi } from 'vitest';
import { anthropicMessage, BASE_POLICY, REAL_KEY, useScriptedUpstream } from './support.ts';

const POLICY = BASE_POLICY.replace(
  'model: { in: [',
  'model: { starts_with: "scripted-" }\n    effect: ALLOW\n  - name: stubs\n    action: model\n    conditions:\n      model: { in: [',
);
const PRICE = { input_per_mtok: 3, output_per_mtok: 15 };

const GZIP_ERROR = gzipSync(
  JSON.stringify({ type: 'error', error: { type: 'rate_limit_error', message: 'slow down' } }),
);
// A proxy's error page in ISO-8859-1 ("Dienst nicht verfügbar"): not UTF-8.
const LATIN1_ERROR = Buffer.from('<html>Dienst nicht verf\xfcgbar</html>', 'latin1');
// The same page quoting the key: only the key's bytes change.
const LATIN1_KEY_ERROR = Buffer.from(`<html>verf\xfcgbar: ${REAL_KEY}</html>`, 'latin1');
const LATIN1_KEY_SCRUBBED = Buffer.from('<html>verf\xfcgbar: [REDACTED]</html>', 'latin1');

function openaiJson(res: ServerResponse, model: string, usage: unknown): void {
  const text = JSON.stringify({
    id: 'chatcmpl-1',
    object: 'chat.completion',
    created: 1,
    model,
    choices: [
      {
        index: 0,
        finish_reason: 'stop',
        logprobs: null,
        message: { role: 'assistant', content: 'hi', refusal: null },
      },
    ],
    usage,
  });
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function anthropicJson(res: ServerResponse, model: string, usage: unknown): void {
  const text = JSON.stringify(anthropicMessage(model, usage));
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function answer(model: string, _req: IncomingMessage, res: ServerResponse): void {
  switch (model) {
    case 'scripted-gzip-error':
      res.writeHead(429, {
        'content-type': 'application/json',
        'content-encoding': 'gzip',
        'content-length': GZIP_ERROR.length,
      });
      return void res.end(GZIP_ERROR);
    case 'scripted-latin1-error':
      res.writeHead(502, {
        'content-type': 'text/html; charset=iso-8859-1',
        'content-length': LATIN1_ERROR.length,
      });
      return void res.end(LATIN1_ERROR);
    case 'scripted-latin1-key-error':
      res.writeHead(502, {
        'content-type': 'text/html; charset=iso-8859-1',
        'content-length': LATIN1_KEY_ERROR.length,
      });
      return void res.end(LATIN1_KEY_ERROR);
    case 'scripted-redirect':
      res.writeHead(307, {
        location: 'https://llm-scripted.gw.internal.corp:8443/anthropic/v1/messages',
        'content-length': 0,
      });
      return void res.end();
    case 'scripted-usage-empty-anthropic':
      anthropicJson(res, model, {});
      return;
    case 'scripted-usage-strings-anthropic':
      anthropicJson(res, model, { input_tokens: '1000', output_tokens: '50' });
      return;
    case 'scripted-usage-empty-openai':
      openaiJson(res, model, {});
      return;
    case 'scripted-usage-strings-openai':
      openaiJson(res, model, { prompt_tokens: '1000', completion_tokens: '50', total_tokens: '1050' });
      return;
    case 'scripted-usage-negative-openai':
      openaiJson(res, model, { prompt_tokens: -1000, completion_tokens: -50, total_tokens: -1050 });
      return;
    case 'scripted-untyped-tool-sse': {
      // Streamed tool-call deltas: `type` is optional in the Chat Completions chunk schema.
      const head = { id: 'chatcmpl-2', object: 'chat.completion.chunk', created: 1, model };
      const chunk = (delta: unknown, finish: string | null) => ({
        ...head,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      });
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      for (const c of [
        chunk(
          {
            role: 'assistant',
            content: null,
            tool_calls: [{ index: 0, id: 'call_1', function: { name: 'delete_user', arguments: '' } }],
          },
          null,
        ),
        chunk({ tool_calls: [{ index: 0, function: { arguments: '{"id":"7"}' } }] }, null),
        chunk({}, 'tool_calls'),
      ])
        res.write(`data: ${JSON.stringify(c)}\n\n`);
      res.write('data: [DONE]\n\n');
      return void res.end();
    }
    default:
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"type":"error","error":{"type":"not_found_error","message":"no such script"}}');
  }
}

const scripted = useScriptedUpstream(answer, { policy: POLICY, config: { prices: { 'scripted-*': PRICE } } });

async function call(
  vendor: 'anthropic' | 'openai',
  model: string,
  extra: Record<string, unknown> = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer; id: string }> {
  const path = vendor === 'anthropic' ? '/anthropic/v1/messages' : '/openai/v1/chat/completions';
  const res = await request(`${scripted.gw.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model, max_tokens: 64, messages: [{ role: 'user', content: 'x' }], ...extra }),
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  return {
    status: res.statusCode,
    headers: res.headers as Record<string, unknown>,
    body,
    id: String(res.headers['x-sidecar-decision-id']),
  };
}

const logLine = (id: string) =>
  scripted.gw.logs.find((l) => l['decision_id'] === id && l['msg'] === 'decision');

describe('vendor error bodies pass through byte for byte (only the key is replaced)', () => {
  it.each([
    ['scripted-latin1-error', 502, LATIN1_ERROR],
    ['scripted-latin1-key-error', 502, LATIN1_KEY_SCRUBBED],
  ] as const)('%s: the agent gets the vendor bytes, with the key replaced', async (model, status, bytes) => {
    const res = await call('anthropic', model);
    expect(res.status).toBe(status);
    expect(res.body.toString('hex')).toBe(bytes.toString('hex'));
  });

  it('an encoded (gzip) error body, which cannot be searched for the key, is refused in the vendor format', async () => {
    const res = await call('anthropic', 'scripted-gzip-error');
    expect(res.status).toBe(502);
    expect(res.headers['content-encoding']).toBeUndefined();
    expect(res.headers['x-sidecar-error-code']).toBe('SIDECAR_ERR_UPSTREAM_INVALID');
    expect(JSON.parse(res.body.toString('utf8'))).toMatchObject({
      type: 'error',
      error: { type: 'api_error' },
    });
    await vi.waitFor(() => expect(logLine(res.id)).toBeDefined());
  });
});

describe('an upstream redirect is not handed to the agent', () => {
  it('a 3xx from the upstream does not reveal the upstream location to the agent', async () => {
    const res = await call('anthropic', 'scripted-redirect');
    expect(res.headers['location']).toBeUndefined();
    expect(res.status).toBe(502);
    expect(res.headers['x-sidecar-error-code']).toBe('SIDECAR_ERR_UPSTREAM_INVALID');
    expect(res.body.toString('utf8')).not.toContain('llm-scripted.gw.internal.corp');
  });
});

describe('usage the gateway cannot read is charged at the reservation, not as zero', () => {
  it.each([
    ['anthropic', 'scripted-usage-empty-anthropic'],
    ['anthropic', 'scripted-usage-strings-anthropic'],
    ['openai', 'scripted-usage-empty-openai'],
    ['openai', 'scripted-usage-strings-openai'],
    ['openai', 'scripted-usage-negative-openai'],
  ] as const)('%s %s: settlement is charge_reserved', async (vendor, model) => {
    const res = await call(vendor, model);
    expect(res.status).toBe(200);
    await vi.waitFor(() => expect(logLine(res.id)).toBeDefined());
    expect(logLine(res.id)?.['settlement']).toBe('charge_reserved');
  });
});

describe('streamed OpenAI tool calls without `type` are still audited', () => {
  it('records a model_tool_anomaly for a forbidden tool named in an untyped tool_calls delta', async () => {
    const res = await call('openai', 'scripted-untyped-tool-sse', { stream: true });
    expect(res.status).toBe(200);
    expect(res.body.toString('utf8')).toContain('"name":"delete_user"');
    await vi.waitFor(() => expect(logLine(res.id)).toBeDefined());
    const anomalies = (await scripted.gw.audit()).filter(
      (e) => e.reason === 'model_tool_anomaly' && (e.extra as { request?: string }).request === res.id,
    );
    expect(anomalies.map((e) => (e.action as { tool?: string }).tool)).toEqual(['delete_user']);
  });
});
