// A request body must be valid UTF-8: one that is not is refused as malformed (400 in the vendor's format, audited
// `malformed_action`) and never forwarded, so the policy always judges the exact text the vendor would read.
import { describe, expect, it } from 'vitest';
import type { ModelStub } from '../../../agents/model-stub/server.ts';
import { type GatewayUnderTest, useStubGateway } from './support.ts';

let stub: ModelStub;
let gw: GatewayUnderTest;
useStubGateway({}, (s, g) => {
  stub = s;
  gw = g;
});

const raw = (...parts: Array<string | number[]>) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));
const REST = ',"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}';

const ENDPOINTS = {
  anthropic: {
    path: '/anthropic/v1/messages',
    error: { type: 'error', error: { type: 'invalid_request_error' } },
  },
  openai: {
    path: '/openai/v1/chat/completions',
    error: { error: { type: 'invalid_request_error', code: 'SIDECAR_ERR_REQUEST_MALFORMED' } },
  },
} as const;

function post(vendor: keyof typeof ENDPOINTS, body: Buffer): Promise<Response> {
  return fetch(`${gw.url}${ENDPOINTS[vendor].path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body,
  });
}

describe('bodies that are not valid UTF-8', () => {
  it.each([
    // A replacing decoder would show the policy U+FFFD where the vendor reads something else.
    [
      'anthropic',
      'an invalid byte in the prompt',
      raw('{"model":"stub-small","max_tokens":8,"messages":[{"role":"user","content":"h', [0xff], 'i"}]}'),
    ],
    // Two distinct keys for the gateway; a decoder that drops bad bytes reads a second `model`.
    [
      'anthropic',
      'an invalid byte in a key next to model',
      raw('{"model":"stub-small","model', [0xff], '":"x"', REST),
    ],
    [
      'openai',
      'an overlong encoding of "/"',
      raw('{"model":"stub-small","user":"a', [0xc0, 0xaf], '"', REST),
    ],
    [
      'openai',
      'an encoded UTF-16 surrogate',
      raw('{"model":"stub-small","user":"', [0xed, 0xa0, 0x80], '"', REST),
    ],
    ['anthropic', 'a truncated sequence at the end', raw('{"model":"stub-small"', REST, [0xe2, 0x82])],
  ] as const)('%s: %s is refused as malformed, audited, not forwarded', async (vendor, _n, body) => {
    const res = await post(vendor, body);
    expect(res.status).toBe(400);
    expect(res.headers.get('x-sidecar-error-code')).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
    expect(await res.json()).toMatchObject(ENDPOINTS[vendor].error);
    expect(stub.requests).toHaveLength(0);
    const entry = (await gw.audit()).find((e) => e.decision_id === res.headers.get('x-sidecar-decision-id'));
    expect(entry).toMatchObject({
      kind: 'model',
      effect: 'DENY',
      reason: 'malformed_action',
      extra: { malformed: 'not valid UTF-8' },
    });
  });

  it('forwards valid multi-byte UTF-8 byte for byte', async () => {
    const body = raw(
      '{"model":"stub-small","max_tokens":8,"messages":[{"role":"user","content":"héllo 日本 🙂"}]}',
    );
    const res = await post('anthropic', body);
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    expect(stub.requests).toHaveLength(1);
    expect(stub.requests[0]?.rawBody).toBe(body.toString('utf8'));
  });
});
