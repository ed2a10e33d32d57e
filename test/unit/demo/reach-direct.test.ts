// httpReach in direct mode (no proxy) must not take an upstream's own SIDECAR_ERR_-looking error body for a sidecar
// refusal: without the proxy there is no sidecar, so a reply of any kind means the attempt got out.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpReach } from '../../../agents/helpdesk-agent/reach.ts';
import { type HelpdeskToolServer, startHelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';

let tools: HelpdeskToolServer;

beforeAll(async () => {
  tools = await startHelpdeskToolServer({ roleKeys: new Map() });
});
afterAll(async () => {
  await tools?.close();
});

describe('httpReach direct', () => {
  it('counts a direct HTTP answer from the helpdesk tool server as reached', async () => {
    // The tool server answers 404 {"error":{"code":"SIDECAR_ERR_NOT_FOUND",…}} with no decision id header.
    const url = tools.url.replace(/\/mcp$/, '/anything');
    const r = await httpReach(url, 'direct', 5_000);
    expect(r.detail).toMatch(/^HTTP /); // the server answered
    expect(r.reached).toBe(true);
  });
});
