// Headers that override the request line never reach the upstream (found by review, round 6): the policy judges the method on the request line and the path in the
// request-target, but the headers that tell an upstream to use another method or path go upstream verbatim:
// `X-HTTP-Method-Override` (honoured by Google APIs, ASP.NET Web API, Express method-override, Symfony, Laravel),
// `X-HTTP-Method`, `X-Method-Override`, and `X-Original-URL` / `X-Rewrite-URL` (IIS URL Rewrite, Zend, older
// Symfony). A POST the policy allows becomes a DELETE it denies; an allowed path becomes a denied one.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AGENT,
  rawExchange,
  type SidecarUnderTest,
  splitResponses,
  startInProcess,
} from '../reliability/harness.ts';
import { heads, type Recorder, startRecorder } from './byte-recorder.ts';

let s: SidecarUnderTest;
let up: Recorder;
beforeAll(async () => {
  up = await startRecorder();
  // DELETE is never allowed; /admin is never allowed; everything else on the loopback upstream is.
  s = await startInProcess({
    policy: `agent: ${AGENT}
rules:
  - name: no-deletes
    action: network
    conditions: { method: { in: [DELETE] } }
    effect: DENY
  - name: no-admin
    action: network
    conditions: { url: { starts_with: "http://127.0.0.1:${up.port}/admin" } }
    effect: DENY
  - name: loopback
    action: network
    conditions: { address: { in_cidr: ["127.0.0.0/8"] } }
    effect: ALLOW
`,
  });
});
afterAll(async () => {
  await s?.close();
  await up?.close();
});

const complete = (t: string) => /\r\n\r\n[\s\S]*(ok|\}\})$/.test(t);

async function send(request: string) {
  const before = up.text().length;
  const out = await rawExchange(s.port, [request], { stopWhen: complete });
  return { status: splitResponses(out.text)[0]?.status, upstream: heads(up.text().slice(before)) };
}

describe('r6 http: method and path override headers', () => {
  it('control: the policy refuses DELETE and /admin outright', async () => {
    const del = await send(`DELETE http://127.0.0.1:${up.port}/items/1 HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(del.status).toBe(403);
    expect(del.upstream).toEqual([]);
    const admin = await send(`GET http://127.0.0.1:${up.port}/admin/users HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect(admin.status).toBe(403);
    expect(admin.upstream).toEqual([]);
  });

  it('a POST carrying X-HTTP-Method-Override: DELETE does not reach the upstream as such', async () => {
    const r = await send(
      `POST http://127.0.0.1:${up.port}/items/1 HTTP/1.1\r\nHost: x\r\nX-HTTP-Method-Override: DELETE\r\n` +
        'X-HTTP-Method: DELETE\r\nX-Method-Override: DELETE\r\nContent-Length: 0\r\n\r\n',
    );
    // Either refused (judged as the DELETE it asks for) or forwarded without the override.
    if (r.status !== 403) {
      const overrides = (r.upstream[0]?.headers ?? []).filter(([n]) =>
        ['x-http-method-override', 'x-http-method', 'x-method-override'].includes(n),
      );
      expect(overrides).toEqual([]);
    }
  });

  it('an allowed GET carrying X-Original-URL: /admin/users does not reach the upstream as such', async () => {
    const r = await send(
      `GET http://127.0.0.1:${up.port}/public HTTP/1.1\r\nHost: x\r\nX-Original-URL: /admin/users\r\n` +
        'X-Rewrite-URL: /admin/users\r\n\r\n',
    );
    if (r.status !== 403) {
      const overrides = (r.upstream[0]?.headers ?? []).filter(([n]) =>
        ['x-original-url', 'x-rewrite-url'].includes(n),
      );
      expect(overrides).toEqual([]);
    }
  });
});
