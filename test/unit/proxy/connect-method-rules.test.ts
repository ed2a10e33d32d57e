// A tunnel shows the proxy no method, just as it shows no path: a rule on methods cannot tell what a CONNECT will
// carry. So a method-scoped DENY on an origin (or everywhere) refuses tunnels to it, as a path-scoped DENY does,
// instead of letting the origin rule below it open a tunnel that then carries the POST or DELETE it denies.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ProxyUnderTest, rawConnect, startEcho, startProxy, v4 } from './support.ts';

describe('CONNECT against a method-scoped DENY on the same origin', () => {
  let echo: Awaited<ReturnType<typeof startEcho>>;
  const proxies: ProxyUnderTest[] = [];
  beforeAll(async () => {
    echo = await startEcho();
  });
  afterAll(async () => {
    for (const p of proxies) await p.close();
    await echo.close();
  });

  const policy = (deny: string, port: number) => `
agent: connect-method
rules:
  - name: no-writes
    action: network
    conditions:
${deny.replaceAll('PORT', String(port))}
    effect: DENY
  - name: api-origin
    action: network
    conditions:
      url: { starts_with: "https://api.test:${port}" }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
`;

  it.each([
    {
      note: 'DENY url origin + method in [POST, DELETE]',
      deny: '      url: { starts_with: "https://api.test:PORT" }\n      method: { in: [POST, DELETE] }',
    },
    { note: 'DENY method DELETE on every URL', deny: '      method: { equals: DELETE }' },
    {
      note: 'DENY path and method (the path alone already catches the tunnel)',
      deny: '      url: { starts_with: "https://api.test:PORT/admin" }\n      method: { equals: POST }',
    },
  ])('$note: the tunnel is refused', async ({ deny }) => {
    const p = await startProxy({ policy: policy(deny, echo.port), dns: { 'api.test': [v4('127.0.0.1')] } });
    proxies.push(p);
    const before = echo.connections();
    const res = await rawConnect(p.port, `api.test:${echo.port}`);
    res.socket.destroy();
    expect({ status: res.status, rule: p.enforcer.last().verdict.decision.rule }).toEqual({
      status: 403,
      rule: 'no-writes',
    });
    expect(echo.connections()).toBe(before);
  });
});
