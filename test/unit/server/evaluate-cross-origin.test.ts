// /v1/evaluate refuses a browser's cross-origin POST (an `Origin` header, a non-JSON content type) before deciding
// it, as the MCP gateway on the same port does. Found by review, round 7: evaluate decided such a form post from a
// page the agent renders, audited it as the agent's, and spent its rate-limit slots and approval queue.
import { describe, expect, it } from 'vitest';
import { AGENT, auditEntries, evaluate, useSidecarAndUpstream } from '../reliability/harness.ts';

const POLICY = `agent: ${AGENT}
rules:
  - name: reads
    action: file_read
    conditions: { path: { starts_with: /data } }
    effect: ALLOW
    rate_limit: { max: 1, per: hour }
`;

describe('r7 evaluate: cross-origin browser requests', () => {
  const ctx = useSidecarAndUpstream({ policy: POLICY });

  it('refuses a text/plain POST carrying an Origin (CSRF from a page the agent renders) before deciding it', async () => {
    // What an HTML <form enctype="text/plain"> with name `{"type":"file_read","path":"/data/x","args":{"a":"` and
    // value `"}}` sends, no script needed: `name=value\r\n` is valid action JSON followed by whitespace.
    const body = '{"type":"file_read","path":"/data/x","args":{"a":"="}}\r\n';
    const res = await fetch(`${ctx.s.url}/v1/evaluate`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', origin: 'https://attacker.example' },
      body,
    });
    const text = await res.text();
    // Wanted: refused like the MCP gateway does (403 on Origin, or 415 on the content type), nothing decided.
    expect.soft([403, 415], `answered ${res.status} ${text}`).toContain(res.status);

    // The agent's own request must still have its one slot: the page must not have spent it.
    const mine = await evaluate(ctx.s.url, { type: 'file_read', path: '/data/report.csv' });
    expect.soft(mine.body['effect'], "the agent's own read, after the page's").toBe('ALLOW');

    // And the chain holds no decision the agent did not ask for.
    const entries = await auditEntries(ctx.s.auditPath);
    const decided = entries.filter((e) => e.kind === 'evaluate');
    expect(decided.map((e) => (e.action as { path?: string }).path)).toEqual(['/data/report.csv']);
  });
});
