// The sidecar's API key never reaches the agent in a response header: an upstream (or a gateway in front of the
// vendor, `upstream: https://gw.example/anthropic`) that quotes the credential it was sent in a header, on an error
// or a success, has it replaced, as error bodies already had (docs/model-gateway.md, Keys). Found by review,
// round 4: the body was scrubbed and the same error's headers were relayed as they came.
import { describe, expect, it } from 'vitest';
import { anthropicMessage, postMessages, REAL_KEY, useScriptedUpstream } from './support.ts';

const t = useScriptedUpstream((model, req, res) => {
  const sent = String(req.headers['x-api-key'] ?? req.headers.authorization ?? '');
  if (model === 'stub-unpriced') {
    // A successful answer from the same echoing layer.
    const ok = JSON.stringify(anthropicMessage(model));
    res.writeHead(200, { 'content-type': 'application/json', 'x-echo-credential': sent });
    res.end(ok);
    return;
  }
  const body = JSON.stringify({
    type: 'error',
    error: { type: 'rate_limit_error', message: `rate limited for credential ${sent}` },
  });
  res.writeHead(429, {
    'content-type': 'application/json',
    // What e.g. a debugging or API-management layer in front of the vendor echoes back.
    'x-echo-credential': sent,
    'content-length': Buffer.byteLength(body),
  });
  res.end(body);
}, {});

describe('model gateway: the key in a vendor error', () => {
  it('Anthropic: 429 quoting the key in body and header: neither reaches the agent', async () => {
    const res = await postMessages(t.gw.url, {
      model: 'stub-small',
      max_tokens: 8,
      messages: [{ role: 'user', content: 'hi' }],
    });
    const text = await res.text();
    expect(res.status).toBe(429);
    expect(text).toContain('[REDACTED]');
    expect(text).not.toContain(REAL_KEY);
    expect(res.headers.get('x-echo-credential')).toBe('[REDACTED]');
    expect(JSON.stringify([...res.headers])).not.toContain(REAL_KEY);
  });

  it('OpenAI: 429 quoting the Bearer key in a header: it does not reach the agent', async () => {
    const res = await fetch(`${t.gw.url}/openai/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: 'Bearer placeholder' },
      body: JSON.stringify({ model: 'stub-small', messages: [{ role: 'user', content: 'hi' }] }),
    });
    await res.text();
    expect(res.status).toBe(429);
    expect(JSON.stringify([...res.headers])).not.toContain(REAL_KEY);
  });

  it('Anthropic: a 200 whose headers quote the key: the key does not reach the agent', async () => {
    const res = await postMessages(t.gw.url, {
      model: 'stub-unpriced',
      max_tokens: 8,
      messages: [{ role: 'user', content: 'hi' }],
    });
    await res.text();
    expect(res.status).toBe(200);
    expect(JSON.stringify([...res.headers])).not.toContain(REAL_KEY);
  });
});
