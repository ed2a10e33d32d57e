// The agent's MCP client: the official SDK over Streamable HTTP to its sidecar's /mcp, carrying the end user's token.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { CallToolResultSchema, McpError, type Tool } from '@modelcontextprotocol/sdk/types.js';

/** How one tool call ended, as the agent saw it. */
export type ToolOutcome =
  /** The tool ran and returned a result. */
  | 'ok'
  /** The tool ran (or its server refused it) and returned a result flagged `isError`. */
  | 'tool_error'
  /** The sidecar refused the call (policy, misrouted or bad end-user token, rate limit, approval denied). */
  | 'denied'
  /** The call did not complete (upstream down, timeout, protocol error). */
  | 'failed';

export interface ToolCallRecord {
  readonly tool: string;
  readonly args: Readonly<Record<string, unknown>>;
  readonly outcome: ToolOutcome;
  /** The sidecar's decision id: join it with the role's audit chain. */
  readonly decision_id: string | null;
  /** The sidecar's error code when it refused (`SIDECAR_ERR_…`). */
  readonly code: string | null;
  /** The result's text (truncated), or the refusal's message. */
  readonly text: string;
}

export interface McpSession {
  listTools(): Promise<Tool[]>;
  callTool(name: string, args: Record<string, unknown>): Promise<ToolCallRecord>;
  close(): Promise<void>;
}

export interface McpSessionOptions {
  /** The sidecar's MCP gateway, e.g. http://127.0.0.1:15000/mcp. */
  readonly mcpUrl: string;
  /** The end user's token, sent on every MCP request so the sidecar can verify who the call is for. */
  readonly endUserToken: string;
  /**
   * A held call waits for a human (REQUIRE_APPROVAL, up to the sidecar's approval timeout of 5 minutes), so a
   * tool call may take that long. Default 310 s.
   */
  readonly callTimeoutMs?: number;
}

const TEXT_LIMIT = 2000;
const DECISION_HEADER = 'x-sidecar-decision-id';

export async function openMcpSession(opts: McpSessionOptions): Promise<McpSession> {
  // The SDK does not surface response headers, and an allowed call's decision id travels in one. Calls within a
  // session are sequential, so the last tools/call's header belongs to the call that just returned.
  let lastCallDecision: string | null = null;
  const capture = async (url: string | URL, init?: RequestInit): Promise<Response> => {
    const isCall = typeof init?.body === 'string' && init.body.includes('"tools/call"');
    if (isCall) lastCallDecision = null;
    const res = await fetch(url, init);
    if (isCall) lastCallDecision = res.headers.get(DECISION_HEADER);
    return res;
  };
  const transport = new StreamableHTTPClientTransport(new URL(opts.mcpUrl), {
    requestInit: { headers: { authorization: `Bearer ${opts.endUserToken}` } },
    fetch: capture,
  });
  const client = new Client({ name: 'helpdesk-agent', version: '0.1.0' });
  await client.connect(transport);
  const timeout = opts.callTimeoutMs ?? 310_000;

  return {
    async listTools() {
      const tools: Tool[] = [];
      let cursor: string | undefined;
      do {
        const page = await client.listTools(cursor === undefined ? {} : { cursor });
        tools.push(...page.tools);
        cursor = page.nextCursor;
      } while (cursor !== undefined);
      return tools;
    },
    async callTool(name, args) {
      try {
        const result = await client.callTool({ name, arguments: args }, CallToolResultSchema, {
          timeout,
          maxTotalTimeout: timeout,
        });
        const text = (Array.isArray(result.content) ? result.content : [])
          .map((c) => (c.type === 'text' ? c.text : `[${c.type}]`))
          .join('\n');
        return {
          tool: name,
          args,
          outcome: result.isError === true ? 'tool_error' : 'ok',
          decision_id: lastCallDecision,
          code: null,
          text: truncate(text),
        };
      } catch (err) {
        return refusal(name, args, err);
      }
    },
    async close() {
      await client.close().catch(() => undefined);
    },
  };
}

/** A JSON-RPC error from the sidecar: -32010 is a refusal, anything else a failure. */
function refusal(tool: string, args: Readonly<Record<string, unknown>>, err: unknown): ToolCallRecord {
  if (err instanceof McpError) {
    const data = (typeof err.data === 'object' && err.data !== null ? err.data : {}) as Record<
      string,
      unknown
    >;
    return {
      tool,
      args,
      outcome: err.code === -32010 ? 'denied' : 'failed',
      decision_id: typeof data['decision_id'] === 'string' ? data['decision_id'] : null,
      code: typeof data['code'] === 'string' ? data['code'] : null,
      text: truncate(err.message),
    };
  }
  return {
    tool,
    args,
    outcome: 'failed',
    decision_id: null,
    code: null,
    text: truncate((err as Error).message),
  };
}

function truncate(text: string): string {
  return text.length > TEXT_LIMIT ? `${text.slice(0, TEXT_LIMIT)}…` : text;
}
