// x-sidecar-decision-id is the sidecar's header alone (docs/egress.md: "The id is never sent upstream"): stripped
// from the upstream's response, and from the agent's request too, so no upstream sees an id the sidecar never
// issued (or one of another decision).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type ProxyUnderTest,
  rawProxyRequest,
  startProxy,
  startUpstream,
  type Upstream,
  v4,
} from './support.ts';

describe('the decision id header on the way up', () => {
  let up: Upstream;
  let p: ProxyUnderTest;
  beforeAll(async () => {
    up = await startUpstream();
    p = await startProxy({
      policy: `
agent: decision-id
rules:
  - name: allowed
    action: network
    conditions:
      url: { starts_with: "http://allowed.test:${up.port}" }
      address: { in_cidr: ["127.0.0.0/8"] }
    effect: ALLOW
`,
      dns: { 'allowed.test': [v4('127.0.0.1')] },
    });
  });
  afterAll(async () => {
    await p.close();
    await up.close();
  });

  it.each(['x-sidecar-decision-id', 'X-Sidecar-Decision-Id'])(
    'an agent-sent %s never reaches the upstream',
    async (name) => {
      up.seen.length = 0;
      const res = await rawProxyRequest(p.port, `http://allowed.test:${up.port}/`, {
        headers: { [name]: 'forged-by-agent' },
      });
      expect(res.status).toBe(200);
      expect(up.seen).toHaveLength(1);
      expect(up.seen[0]!.headers['x-sidecar-decision-id']).toBeUndefined();
    },
  );
});
