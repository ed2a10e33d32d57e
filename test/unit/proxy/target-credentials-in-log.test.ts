// Credentials an agent puts in a proxy request-target (userinfo, a secret query parameter) are redacted in the audit
// log, and the canonical proxy line, which skips redaction, never carries the raw target: a target refused as
// malformed is logged with `host: null`. Found by review, round 4: the line wrote the raw target as `host`.
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { type LoggedSidecar, startLoggedSidecar } from './logged-sidecar.ts';

const SECRET1 = 'hunter2-S3CRET-pw-one';
const SECRET2 = 'hunter2-S3CRET-tok-two';
const SECRET3 = 'hunter2-S3CRET-pw-three';
const POLICY = `agent: r4-proxy
rules:
  - name: example
    action: network
    conditions: { host: { equals: example.com } }
    effect: ALLOW
`;

let sc: LoggedSidecar;
beforeAll(async () => {
  sc = await startLoggedSidecar({ policy: POLICY });
});
afterAll(async () => {
  await sc?.close();
});

/** Sends raw bytes to the agent listener and reads until the sidecar closes or the response is complete. */
function raw(port: number, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let out = '';
    s.on('data', (c: Buffer) => {
      out += c.toString('utf8');
      const head = out.indexOf('\r\n\r\n');
      const len = /content-length: (\d+)/i.exec(out);
      if (head >= 0 && len && out.length >= head + 4 + Number(len[1])) s.destroy();
    });
    s.on('close', () => resolve(out));
    s.on('error', reject);
    s.write(request);
  });
}

/** The canonical line of the decision the answer names (the line is written just after the answer). */
async function lineFor(answer: string): Promise<string> {
  const id = /x-sidecar-decision-id: ([0-9a-f-]{36})/i.exec(answer)?.[1];
  expect(id).toBeDefined();
  return vi.waitFor(() => {
    const line = sc
      .logText()
      .split('\n')
      .find((l) => l.includes(`"decision_id":"${id}"`) && l.includes('"msg":"decision"'));
    if (line === undefined) throw new Error('no canonical line yet');
    return line;
  });
}

describe('a refused request-target carrying credentials', () => {
  it.each([
    {
      name: 'absolute-form with userinfo',
      request: `GET http://alice:${SECRET1}@example.com/ HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n`,
      secret: SECRET1,
      audited: 'malformed_action',
    },
    {
      name: 'an unparseable target (bad port) with a secret query parameter',
      request: `GET http://example.com:99999/cb?access_token=${SECRET2} HTTP/1.1\r\nhost: example.com\r\nconnection: close\r\n\r\n`,
      secret: SECRET2,
      audited: 'access_token=[REDACTED]',
    },
    {
      name: 'CONNECT with userinfo',
      request: `CONNECT bob:${SECRET3}@example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n`,
      secret: SECRET3,
      audited: 'malformed_action',
    },
  ])(
    '$name: 400, and the secret is in neither the audit nor the log',
    async ({ request, secret, audited }) => {
      const answer = await raw(sc.port, request);
      expect(answer).toMatch(/^HTTP\/1\.1 400/);
      const audit = await sc.auditText();
      expect(audit).toContain(audited);
      expect(audit).not.toContain(secret);
      const line = await lineFor(answer);
      expect(line).not.toContain(secret);
      expect(JSON.parse(line)).toMatchObject({ host: null, port: 0 });
    },
  );
});
