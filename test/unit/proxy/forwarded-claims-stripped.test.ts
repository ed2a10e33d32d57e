// Agent-written host claims never reach the upstream (found by review, round 6): the policy judges the host in the request-target, and the proxy sets Host to it,
// but agent-written Forwarded / X-Forwarded-Host headers go upstream verbatim. An upstream that takes its host from
// them (Express `trust proxy`, Django USE_X_FORWARDED_HOST, Spring ForwardedHeaderFilter, Rails, most ingress
// stacks that trust private ranges; the sidecar sits on exactly such a range) routes or builds URLs for a host the
// policy never judged. The sidecar is the only party that knows the judged host: it must not pass on a claim
// about the host that the agent wrote.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AGENT,
  rawExchange,
  type SidecarUnderTest,
  splitResponses,
  startInProcess,
} from '../reliability/harness.ts';
import { heads, type Recorder, startRecorder } from './byte-recorder.ts';

// Only `localhost` may be reached (on loopback); nothing else is judged allowed.
const POLICY = `agent: ${AGENT}
rules:
  - name: localhost-only
    action: network
    conditions:
      host: { equals: localhost }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
`;

let s: SidecarUnderTest;
let up: Recorder;
beforeAll(async () => {
  s = await startInProcess({ policy: POLICY });
  up = await startRecorder();
});
afterAll(async () => {
  await up.close();
  await s.close();
});

const complete = (t: string) => /\r\n\r\n[\s\S]*(ok|\}\})$/.test(t);

describe('r6 http: forwarding headers naming another host', () => {
  it('the upstream never receives an agent-written host claim other than the judged host', async () => {
    const out = await rawExchange(
      s.port,
      [
        `GET http://localhost:${up.port}/status HTTP/1.1\r\nHost: localhost:${up.port}\r\n` +
          'X-Forwarded-Host: admin.internal\r\n' +
          'Forwarded: for=127.0.0.1;host=admin.internal;proto=https\r\n\r\n',
      ],
      { stopWhen: complete },
    );
    // The policy allowed the request for localhost: it went out.
    expect(splitResponses(out.text)[0]?.status).toBe(200);
    const [head] = heads(up.text());
    expect(head?.line).toBe('GET /status HTTP/1.1');
    expect(head?.headers).toContainEqual(['host', `localhost:${up.port}`]);
    // What it went out with: a second opinion on the host, written by the agent, that the policy never saw.
    const hostClaims = (head?.headers ?? []).filter(
      ([name, value]) => name === 'x-forwarded-host' || (name === 'forwarded' && /host=/i.test(value)),
    );
    expect(hostClaims).toEqual([]);
  });
});
