// A model name is an identifier, and the spend ledger keeps one total per name for the sidecar's lifetime (and
// writes them to its spend file). Under a policy that admits a model family (`starts_with: "claude-"`), an agent
// that hung up once its call was sent had a 100 KiB made-up name kept forever: 40 calls kept 4 MB. Names longer
// than MAX_MODEL_NAME are refused as malformed before anything is reserved or sent. (Found by review, round 4.)
import { describe, expect, it } from 'vitest';
import { MAX_MODEL_NAME } from '../../../sidecar/model/gateway.ts';
import { AGENT, anthropicMessage, postMessages, useScriptedUpstream } from './support.ts';

const POLICY = `agent: ${AGENT}
rules:
  - name: claude-family
    action: model
    conditions:
      model: { starts_with: "claude-" }
    effect: ALLOW
`;

const sent: string[] = [];
const ctx = useScriptedUpstream(
  (model, _req, res) => {
    sent.push(model);
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(anthropicMessage(model)));
  },
  { policy: POLICY },
);

const named = (length: number) => `claude-${'z'.repeat(length - 'claude-'.length)}`;

describe('model name length', () => {
  it.each([
    { name: `${MAX_MODEL_NAME} characters: judged and sent`, length: MAX_MODEL_NAME, status: 200 },
    {
      name: `${MAX_MODEL_NAME + 1} characters: refused as malformed`,
      length: MAX_MODEL_NAME + 1,
      status: 400,
    },
    { name: '100 KiB: refused as malformed', length: 100 * 1024, status: 400 },
  ])('$name', async ({ length, status }) => {
    const model = named(length);
    sent.length = 0;
    const res = await postMessages(ctx.gw.url, {
      model,
      max_tokens: 16,
      messages: [{ role: 'user', content: 'hi' }],
    });
    await res.arrayBuffer();
    expect(res.status).toBe(status);
    const last = (await ctx.gw.audit()).at(-1)!;
    if (status === 400) {
      expect(sent).toEqual([]);
      expect(last).toMatchObject({ effect: 'DENY', reason: 'malformed_action', action: { type: 'model' } });
      expect(JSON.stringify(last)).not.toContain('zzzzzzzzzz');
      expect(Object.keys(ctx.gw.gateway.spend().models)).not.toContain(model);
    } else {
      expect(sent).toEqual([model]);
      expect(Object.keys(ctx.gw.gateway.spend().models)).toContain(model);
    }
  });
});
