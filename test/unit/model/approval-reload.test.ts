// A model call held for approval and approved after a reload: the gateway filtered tools and read budgets under the
// policy it was held under, so if the policy changed meanwhile the call is refused (audited `policy_changed`) rather
// than sent upstream with tools or budgets no longer in force. Any change of the policy's digest counts; a reload
// of the same bytes is no change. (Found by review, round 4.)
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelStub } from '../../../agents/model-stub/server.ts';
import { AGENT, type GatewayUnderTest, REAL_KEY, startGateway, startStub } from './support.ts';

const policy = (tools: string) => `agent: ${AGENT}
rules:
  - name: small-model-needs-approval
    action: model
    conditions: { model: { equals: stub-small } }
    effect: REQUIRE_APPROVAL
  - name: tools
    action: tool_call
    conditions: { tool: { in: [${tools}] } }
    effect: ALLOW
`;

let stub: ModelStub;
let gw: GatewayUnderTest;
beforeAll(async () => {
  stub = await startStub();
  gw = await startGateway(stub.url, { policy: policy('query_knowledge_base, delete_account') });
});
afterAll(async () => {
  await gw?.close();
  await stub?.close();
});

const call = () =>
  fetch(`${gw.url}/anthropic/v1/messages`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-api-key': 'sk-agent',
      'anthropic-version': '2023-06-01',
    },
    body: JSON.stringify({
      model: 'stub-small',
      max_tokens: 16,
      messages: [{ role: 'user', content: 'hi' }],
      tools: [
        { name: 'query_knowledge_base', input_schema: { type: 'object' } },
        { name: 'delete_account', input_schema: { type: 'object' } },
      ],
    }),
  });

describe('a model call approved after a reload', () => {
  it.each([
    {
      name: 'that took a tool away: refused, nothing sent upstream',
      tools: 'query_knowledge_base',
      status: 403,
    },
    {
      name: 'that left the file as it was: the call goes out',
      tools: 'query_knowledge_base, delete_account',
      status: 200,
    },
  ])('$name', async ({ tools, status }) => {
    const sidecar = gw.sidecar;
    const policyPath = join(gw.dir, 'policy.yaml');
    await writeFile(policyPath, policy('query_knowledge_base, delete_account'));
    await sidecar.policies.reload('test');
    stub.requests.length = 0;

    const answer = call();
    while (sidecar.approvals.list().length === 0) await sleep(5);
    const pending = sidecar.approvals.list()[0]!;
    await writeFile(policyPath, policy(tools));
    await sidecar.policies.reload('test');
    expect(sidecar.approvals.approve(pending.id, 'alice@ops', pending.actionHash).ok).toBe(true);
    const res = await answer;
    await res.arrayBuffer();

    expect(res.status).toBe(status);
    if (status === 403) {
      expect(stub.requests).toHaveLength(0);
      expect((await gw.audit()).at(-1)).toMatchObject({ effect: 'DENY', reason: 'policy_changed' });
    } else {
      expect(stub.requests.map((r) => r.headers['x-api-key'])).toEqual([REAL_KEY]);
    }
  });
});
