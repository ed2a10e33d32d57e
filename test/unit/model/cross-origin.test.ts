// A page the agent renders cannot spend the role's model budget: a cross-origin form post (text/plain body that is
// valid JSON, an Origin header) to the model gateway is refused with the vendor's 403 before anything is reserved,
// audited or sent, as /mcp and /v1/evaluate refuse it. Found while reviewing the evaluate fix of round 7.
import { describe, expect, it } from 'vitest';
import { anthropicMessage, useScriptedUpstream } from './support.ts';

const sent: string[] = [];
const ctx = useScriptedUpstream((model, _req, res) => {
  sent.push(model);
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(anthropicMessage(model)));
}, {});

describe('a cross-origin post to the model gateway', () => {
  it.each([
    {
      name: 'with an Origin: refused 403, nothing sent',
      origin: 'https://evil.example',
      status: 403,
      upstream: 0,
    },
    { name: 'without one (an SDK): answered', origin: undefined, status: 200, upstream: 1 },
  ])('$name', async ({ origin, status, upstream }) => {
    sent.length = 0;
    const before = (await ctx.gw.audit()).length;
    const res = await fetch(`${ctx.gw.url}/anthropic/v1/messages`, {
      method: 'POST',
      headers: {
        'content-type': 'text/plain',
        'anthropic-version': '2023-06-01',
        ...(origin ? { origin } : {}),
      },
      body: JSON.stringify({
        model: 'stub-small',
        max_tokens: 8,
        messages: [{ role: 'user', content: 'hi' }],
      }),
    });
    const body = await res.text();
    expect(res.status).toBe(status);
    expect(sent).toHaveLength(upstream);
    if (status === 403) {
      expect(JSON.parse(body)).toMatchObject({ type: 'error', error: { type: 'permission_error' } });
      expect((await ctx.gw.audit()).length).toBe(before);
    }
  });
});
