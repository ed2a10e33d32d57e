// One chat turn of the helpdesk agent: list tools over MCP, ask the model, run its tool calls over MCP, repeat.
import Anthropic from '@anthropic-ai/sdk';
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { type McpSession, openMcpSession, type ToolCallRecord } from './mcp-session.ts';

export interface ModelCallRecord {
  readonly model: string;
  readonly stop_reason: string | null;
  readonly input_tokens: number;
  readonly output_tokens: number;
  readonly decision_id: string | null;
}

/** What the agent did for one chat: what it could see, what it asked the model, what it called and how that ended. */
export interface ChatTrace {
  tools_seen: string[];
  model_calls: ModelCallRecord[];
  tool_calls: ToolCallRecord[];
}

export interface ChatResult {
  readonly reply: string | null;
  /** Set when the model call failed or was refused; the trace shows how far the turn got. */
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly trace: ChatTrace;
}

export interface AgentSettings {
  /** The sidecar's MCP gateway, e.g. http://127.0.0.1:15000/mcp. */
  readonly mcpUrl: string;
  /** The sidecar's Anthropic gateway, e.g. http://127.0.0.1:15000/anthropic. */
  readonly anthropicBaseUrl: string;
  readonly model: string;
  /** Model calls per chat, tool rounds included. Default 6. */
  readonly maxModelCalls?: number;
  readonly maxTokens?: number;
}

export const SYSTEM_PROMPT =
  'You are the helpdesk assistant. Use the tools you are given to answer; call a tool when the user names one. ' +
  'Report what the tools returned, including refusals, and never claim an action a tool did not confirm.';

/**
 * Runs one chat. Every request to the sidecar carries the end user's token: MCP requests so the sidecar can verify
 * the user and refuse a misrouted one; model requests, where the sidecar drops it before anything goes upstream.
 */
export async function runChat(
  settings: AgentSettings,
  endUserToken: string,
  message: string,
  session?: McpSession,
): Promise<ChatResult> {
  const trace: ChatTrace = { tools_seen: [], model_calls: [], tool_calls: [] };
  let mcp: McpSession;
  try {
    mcp = session ?? (await openMcpSession({ mcpUrl: settings.mcpUrl, endUserToken }));
  } catch (err) {
    return { reply: null, error: { code: 'sidecar_unreachable', message: (err as Error).message }, trace };
  }
  try {
    let tools: Tool[];
    try {
      tools = await mcp.listTools();
    } catch (err) {
      return { reply: null, error: { code: 'tools_unavailable', message: (err as Error).message }, trace };
    }
    trace.tools_seen = tools.map((t) => t.name);
    const anthropic = new Anthropic({
      baseURL: settings.anthropicBaseUrl,
      // The sidecar holds the real key; the SDK sends this as `Authorization: Bearer`, and the sidecar removes it.
      authToken: endUserToken,
      maxRetries: 1,
    });
    const messages: Anthropic.MessageParam[] = [{ role: 'user', content: message }];
    const offered = tools.map(toAnthropicTool);
    const limit = settings.maxModelCalls ?? 6;
    for (let call = 0; call < limit; call++) {
      let answer: Anthropic.Message;
      try {
        const { data, response } = await anthropic.messages
          .create({
            model: settings.model,
            max_tokens: settings.maxTokens ?? 1024,
            system: SYSTEM_PROMPT,
            messages,
            ...(offered.length > 0 ? { tools: offered } : {}),
          })
          .withResponse();
        answer = data;
        trace.model_calls.push({
          model: data.model,
          stop_reason: data.stop_reason,
          input_tokens: data.usage.input_tokens,
          output_tokens: data.usage.output_tokens,
          decision_id: response.headers.get('x-sidecar-decision-id'),
        });
      } catch (err) {
        return { reply: null, error: modelError(err), trace };
      }
      const uses = answer.content.filter((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use');
      if (answer.stop_reason !== 'tool_use' || uses.length === 0) {
        return { reply: textOf(answer), error: null, trace };
      }
      messages.push({ role: 'assistant', content: answer.content });
      const results: Anthropic.ToolResultBlockParam[] = [];
      for (const use of uses) {
        const args = isRecord(use.input) ? use.input : {};
        const record = await mcp.callTool(use.name, args);
        trace.tool_calls.push(record);
        results.push({
          type: 'tool_result',
          tool_use_id: use.id,
          content: forModel(record),
          ...(record.outcome === 'ok' ? {} : { is_error: true }),
        });
      }
      messages.push({ role: 'user', content: results });
    }
    return { reply: `Stopped after ${limit} model calls without a final answer.`, error: null, trace };
  } finally {
    if (session === undefined) await mcp.close();
  }
}

function toAnthropicTool(tool: Tool): Anthropic.Tool {
  return {
    name: tool.name,
    ...(tool.description === undefined ? {} : { description: tool.description }),
    input_schema: tool.inputSchema as Anthropic.Tool.InputSchema,
  };
}

/** What the model is told about a call: the result, or that it was refused (never more than the sidecar said). */
function forModel(record: ToolCallRecord): string {
  switch (record.outcome) {
    case 'ok':
    case 'tool_error':
      return record.text;
    case 'denied':
      return `The call was refused (${record.code ?? 'refused'}; decision ${record.decision_id ?? 'unknown'}).`;
    case 'failed':
      return `The call failed (${record.code ?? 'error'}).`;
  }
}

function textOf(message: Anthropic.Message): string {
  return message.content
    .filter((b): b is Anthropic.TextBlock => b.type === 'text')
    .map((b) => b.text)
    .join('\n');
}

function modelError(err: unknown): { code: string; message: string } {
  if (err instanceof Anthropic.APIError) {
    const code = err.headers?.get('x-sidecar-error-code') ?? `model_status_${err.status ?? 'none'}`;
    return { code, message: err.message };
  }
  return { code: 'model_unreachable', message: (err as Error).message };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
