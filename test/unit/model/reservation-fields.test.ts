// Output limits and the number of answers must mean the same to the gateway and to the vendor: a `max_tokens`,
// `max_completion_tokens` or `n` that is present but not a positive integer ("200000", 0, 1.5) is refused as
// malformed (400 in the vendor's format, audited `malformed_action`), budget or not, and never forwarded.
import { describe, expect, it } from 'vitest';
import type { ModelStub } from '../../../agents/model-stub/server.ts';
import { anthropic } from '../../../sidecar/model/anthropic.ts';
import { openai } from '../../../sidecar/model/openai.ts';
import { invalidLimit } from '../../../sidecar/model/vendor.ts';
import { BASE_POLICY, type GatewayUnderTest, useStubGateway } from './support.ts';

let stub: ModelStub;
let gw: GatewayUnderTest;
useStubGateway(
  { policy: `${BASE_POLICY}budgets:\n  - { name: daily, period: day, max_tokens: 50000 }\n` },
  (s, g) => {
    stub = s;
    gw = g;
  },
);

const PATHS = { anthropic: '/anthropic/v1/messages', openai: '/openai/v1/chat/completions' } as const;
const messages = [{ role: 'user', content: 'hi' }];

function post(vendor: keyof typeof PATHS, fields: Record<string, unknown>): Promise<Response> {
  return fetch(`${gw.url}${PATHS[vendor]}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'stub-small', ...fields, messages }),
  });
}

describe('limit fields the gateway cannot read', () => {
  it.each([
    // A vendor that coerces "200000" (pydantic's lax mode does) would run far above a default-sized reservation.
    ['anthropic', { max_tokens: '200000' }, 'max_tokens'],
    ['anthropic', { max_tokens: 0 }, 'max_tokens'],
    ['openai', { max_completion_tokens: 10000, n: '20' }, 'n'],
    ['openai', { max_completion_tokens: 1.5 }, 'max_completion_tokens'],
    ['openai', { max_tokens: -1 }, 'max_tokens'],
    ['openai', { n: 0 }, 'n'],
  ] as const)('%s %j: refused as malformed, audited, nothing reserved', async (vendor, fields, field) => {
    const res = await post(vendor, fields);
    expect(res.status).toBe(400);
    expect(res.headers.get('x-sidecar-error-code')).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
    expect(res.headers.get('x-should-retry')).toBe('false');
    const body = (await res.json()) as { error: { type: string } };
    expect(body.error.type).toBe('invalid_request_error');
    expect(stub.requests).toHaveLength(0);
    expect(gw.gateway.spend().budgets[0]).toMatchObject({ spent_tokens: 0, reserved_tokens: 0 });
    const entry = (await gw.audit()).find((e) => e.decision_id === res.headers.get('x-sidecar-decision-id'));
    expect(entry).toMatchObject({
      kind: 'model',
      effect: 'DENY',
      reason: 'malformed_action',
      action: { type: 'model', model: 'stub-small' },
      extra: { malformed: `${field} is not a positive integer` },
    });
  });

  it.each([
    ['anthropic', { max_tokens: 8 }],
    ['openai', { max_completion_tokens: 8, n: 2 }],
    ['openai', { max_tokens: 8, n: null }],
  ] as const)('%s %j: forwarded', async (vendor, fields) => {
    const res = await post(vendor, fields);
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    expect(stub.requests).toHaveLength(1);
  });
});

describe('invalidLimit', () => {
  it('names the first limit field present that is not a positive integer; absent and null are fine', () => {
    const fields = openai.limitFields;
    expect(invalidLimit({}, fields)).toBeUndefined();
    expect(invalidLimit({ max_completion_tokens: null, max_tokens: 10, n: 3 }, fields)).toBeUndefined();
    expect(invalidLimit({ max_tokens: 10, n: true }, fields)).toBe('n');
    expect(invalidLimit({ max_tokens: 2 ** 60 }, fields)).toBe('max_tokens');
    expect(invalidLimit({ max_tokens: '10' }, anthropic.limitFields)).toBe('max_tokens');
    expect(invalidLimit({ n: '10' }, anthropic.limitFields)).toBeUndefined();
  });
});
