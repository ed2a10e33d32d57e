// The helpdesk agent's chat endpoint: POST /chat with the end user's bearer token, answered by one agent turn.
import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  bearerToken,
  HttpProblem,
  onlyMembers,
  readJsonObject,
  sendJson,
  serveJson,
} from '../lib/json-http.ts';
import { type AgentSettings, runChat } from './agent-loop.ts';
import { type ProbeTarget, runCompromised } from './compromised.ts';

export interface AgentLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface AgentServerOptions extends AgentSettings {
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 0 (ephemeral). */
  readonly port?: number;
  readonly logger?: AgentLogger;
}

export interface AgentServer {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

const MAX_MESSAGE_CHARS = 4000;
const MAX_TARGETS = 32;

/** The validated `POST /chat` body. `inject` is the documented compromised-agent switch (README, docs/demo.md). */
interface ChatRequest {
  readonly message: string;
  readonly inject: boolean;
  readonly targets: readonly ProbeTarget[];
}

function parseChat(body: Record<string, unknown>): ChatRequest {
  onlyMembers(body, ['message', 'inject', 'targets']);
  const message = body['message'] ?? '';
  if (typeof message !== 'string' || message.length > MAX_MESSAGE_CHARS) {
    throw new HttpProblem(
      400,
      'malformed',
      `message must be a string of at most ${MAX_MESSAGE_CHARS} characters`,
    );
  }
  const inject = body['inject'] ?? false;
  if (typeof inject !== 'boolean') throw new HttpProblem(400, 'malformed', 'inject must be a boolean');
  if (!inject && message.trim() === '') throw new HttpProblem(400, 'malformed', 'message is required');
  const raw = body['targets'] ?? [];
  if (!Array.isArray(raw) || raw.length > MAX_TARGETS) {
    throw new HttpProblem(400, 'malformed', `targets must be an array of at most ${MAX_TARGETS}`);
  }
  const targets = raw.map((t: unknown): ProbeTarget => {
    const o = (typeof t === 'object' && t !== null ? t : {}) as Record<string, unknown>;
    const { label, host, port } = o;
    if (
      typeof label !== 'string' ||
      !/^[A-Za-z0-9_.:-]{1,64}$/.test(label) ||
      typeof host !== 'string' ||
      host.length > 255 ||
      typeof port !== 'number' ||
      !Number.isInteger(port) ||
      port < 1 ||
      port > 65535
    ) {
      throw new HttpProblem(400, 'malformed', 'each target is {label, host, port}');
    }
    return { label, host, port };
  });
  return { message, inject, targets };
}

export async function startAgentServer(opts: AgentServerOptions): Promise<AgentServer> {
  const log = opts.logger;

  async function chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // The agent does not judge the token (that is its sidecar's job); it only refuses to act for nobody.
    const token = bearerToken(req);
    if (token === undefined)
      throw new HttpProblem(401, 'unauthenticated', 'an end-user bearer token is required');
    const chatRequest = parseChat(await readJsonObject(req));
    const started = performance.now();
    if (chatRequest.inject) {
      const attempts = await runCompromised({
        mcpUrl: opts.mcpUrl,
        endUserToken: token,
        targets: chatRequest.targets,
      });
      const through = attempts.filter((a) => a.reached && a.category !== 'control');
      log?.warn(
        { event: 'compromised', attempts: attempts.length, got_through: through.map((a) => a.id) },
        'compromised-agent simulation ran',
      );
      return sendJson(res, 200, {
        reply: `Compromised-agent simulation: ${attempts.length} attempts, ${through.length} got through.`,
        error: null,
        attempts,
      });
    }
    const result = await runChat(opts, token, chatRequest.message);
    log?.info(
      {
        event: 'chat',
        tools_seen: result.trace.tools_seen.length,
        tool_calls: result.trace.tool_calls.map((c) => ({
          tool: c.tool,
          outcome: c.outcome,
          decision_id: c.decision_id,
        })),
        model_calls: result.trace.model_calls.length,
        error: result.error?.code,
        ms: Math.round(performance.now() - started),
      },
      'chat',
    );
    sendJson(res, result.error === null ? 200 : 502, result);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://agent').pathname;
    const route = `${req.method} ${path}`;
    if (route === 'GET /healthz') return sendJson(res, 200, { ok: true });
    if (route === 'POST /chat') return chat(req, res);
    throw new HttpProblem(404, 'not_found', 'no such route');
  }

  // A chat can wait for a human approval (up to the sidecar's 5-minute approval timeout).
  return serveJson(handle, {
    ...(opts.host === undefined ? {} : { host: opts.host }),
    ...(opts.port === undefined ? {} : { port: opts.port }),
    requestTimeoutMs: 330_000,
    failure: 'chat failed',
    ...(log ? { log } : {}),
  });
}
