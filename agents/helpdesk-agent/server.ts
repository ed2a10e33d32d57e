// The helpdesk agent's chat endpoint: POST /chat with the end user's bearer token, answered by one agent turn.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  bearerToken,
  HttpProblem,
  onlyMembers,
  readJsonObject,
  sendJson,
  sendProblem,
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

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!(err instanceof HttpProblem)) log?.warn({ err: (err as Error).message }, 'chat failed');
      sendProblem(res, err);
    });
  });
  // A chat can wait for a human approval (up to the sidecar's 5-minute approval timeout).
  server.requestTimeout = 330_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { address, port } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}`,
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
