// One MCP tool call through the sidecar, without the model: what code running in the agent's container can do.
//
//   END_USER_TOKEN=<jwt> node agents/helpdesk-agent/call-tool.ts delete_user '{"user_id":"u-1002"}'
//
// Prints the call's record as one JSON line; exit 0 when the tool ran, 1 when it was refused or failed.
import { openMcpSession } from './mcp-session.ts';

const [tool, argsText = '{}'] = process.argv.slice(2);
const token = process.env['END_USER_TOKEN'];
if (tool === undefined || token === undefined || token === '') {
  process.stderr.write('usage: END_USER_TOKEN=<jwt> call-tool.ts <tool> [json-arguments]\n');
  process.exit(2);
}
let args: Record<string, unknown>;
try {
  args = JSON.parse(argsText) as Record<string, unknown>;
} catch {
  process.stderr.write('the arguments must be a JSON object\n');
  process.exit(2);
}
const session = await openMcpSession({
  mcpUrl: process.env['MCP_URL'] || `${process.env['SIDECAR_URL'] || 'http://127.0.0.1:15000'}/mcp`,
  endUserToken: token,
  callTimeoutMs: 30_000,
});
try {
  const listed = (await session.listTools()).map((t) => t.name);
  const record = await session.callTool(tool, args);
  process.stdout.write(`${JSON.stringify({ listed: listed.includes(tool), ...record })}\n`);
  process.exitCode = record.outcome === 'ok' ? 0 : 1;
} finally {
  await session.close();
}
