// The demo router: signs users in, and sends each chat to the agent of the role in the user's token.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Agent, request } from 'undici';
import {
  bearerToken,
  HttpProblem,
  onlyMembers,
  readJsonObject,
  sendJson,
  serveJson,
} from '../lib/json-http.ts';
import type { Issuer } from './issuer.ts';
import { type AgentDirectory, type Misroutes, type Route, routeFor } from './routing.ts';
import { DEMO_USERS, type DemoUser, findDemoUser, HELPDESK_ROLES } from './users.ts';

export interface RouterLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface RouterOptions {
  readonly issuer: Issuer;
  readonly agents: AgentDirectory;
  readonly misroutes: Misroutes;
  readonly users?: readonly DemoUser[];
  /** Default 127.0.0.1. */
  readonly host?: string;
  /** Default 0 (ephemeral). */
  readonly port?: number;
  /**
   * How long a chat may take: it includes a human approving a held action, so it outlasts the sidecar's approval
   * timeout (5 minutes). Default 330 s.
   */
  readonly chatTimeoutMs?: number;
  readonly logger?: RouterLogger;
}

export interface Router {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** What `POST /chat` passes on to the agent; everything else in the body is refused. */
const CHAT_MEMBERS = ['message', 'inject', 'targets'] as const;

export async function startRouter(opts: RouterOptions): Promise<Router> {
  const users = opts.users ?? DEMO_USERS;
  const chatTimeoutMs = opts.chatTimeoutMs ?? 330_000;
  const dispatcher = new Agent({
    headersTimeout: chatTimeoutMs,
    bodyTimeout: chatTimeoutMs,
    connect: { timeout: 5_000 },
  });
  const log = opts.logger;

  async function login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJsonObject(req);
    onlyMembers(body, ['user']);
    const user = typeof body['user'] === 'string' ? findDemoUser(body['user'], users) : undefined;
    if (user === undefined) throw new HttpProblem(401, 'unknown_user', 'no such demo user');
    const { token, expiresAt } = await opts.issuer.issue(user);
    log?.info({ event: 'login', user: user.login, sub: user.sub, role: user.role }, 'signed in');
    sendJson(res, 200, {
      token,
      token_type: 'Bearer',
      expires_at: expiresAt.toISOString(),
      user: { login: user.login, sub: user.sub, name: user.name, role: user.role },
    });
  }

  async function chat(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const token = bearerToken(req);
    if (token === undefined) throw new HttpProblem(401, 'unauthenticated', 'sign in first: POST /login');
    const who = await opts.issuer.check(token);
    if (!who.ok) throw new HttpProblem(401, 'unauthenticated', `the token is ${who.reason}`);
    const body = await readJsonObject(req);
    onlyMembers(body, CHAT_MEMBERS);
    const route: Route = routeFor(who.role, opts.agents, opts.misroutes);
    const started = performance.now();
    let status: number;
    let answer: unknown;
    try {
      const r = await request(`${route.url}/chat`, {
        method: 'POST',
        dispatcher,
        // The user's own token goes with the request: the agent passes it to its sidecar, which checks it again.
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(body),
      });
      status = r.statusCode;
      const text = await r.body.text();
      try {
        answer = JSON.parse(text);
      } catch {
        answer = { error: { code: 'agent_invalid', message: 'the agent did not answer JSON' } };
        status = 502;
      }
    } catch (err) {
      log?.warn({ event: 'chat', role: route.role, err: (err as Error).message }, 'agent unreachable');
      throw new HttpProblem(502, 'agent_unreachable', `the ${route.role} agent did not answer`);
    }
    log?.info(
      {
        event: 'chat',
        sub: who.sub,
        role: who.role,
        routed_to: route.role,
        misrouted: route.misrouted,
        status,
        ms: Math.round(performance.now() - started),
      },
      route.misrouted ? 'chat MISROUTED by the injected routing bug' : 'chat',
    );
    sendJson(res, status, {
      user: { sub: who.sub, role: who.role },
      routed_to: route.role,
      misrouted: route.misrouted,
      agent: answer,
    });
  }

  /** Ready when every agent answers its health check over its role network (the ingress path works). */
  async function ready(res: ServerResponse): Promise<void> {
    const agents: Record<string, string> = {};
    await Promise.all(
      HELPDESK_ROLES.map(async (role) => {
        try {
          const r = await request(`${opts.agents[role]}/healthz`, {
            dispatcher,
            headersTimeout: 2_000,
            bodyTimeout: 2_000,
          });
          await r.body.dump();
          agents[role] = r.statusCode === 200 ? 'up' : `status ${r.statusCode}`;
        } catch (err) {
          agents[role] = (err as { code?: string }).code ?? 'unreachable';
        }
      }),
    );
    const ok = Object.values(agents).every((s) => s === 'up');
    sendJson(res, ok ? 200 : 503, { ready: ok, agents, misroute: Object.fromEntries(opts.misroutes) });
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://router').pathname;
    const route = `${req.method} ${path}`;
    switch (route) {
      case 'GET /healthz':
        return sendJson(res, 200, { ok: true });
      case 'GET /readyz':
        return ready(res);
      case 'GET /.well-known/jwks.json':
        return sendJson(res, 200, opts.issuer.jwks);
      case 'POST /login':
        return login(req, res);
      case 'POST /chat':
        return chat(req, res);
      default:
        throw new HttpProblem(404, 'not_found', 'no such route');
    }
  }

  return serveJson(handle, {
    ...(opts.host === undefined ? {} : { host: opts.host }),
    ...(opts.port === undefined ? {} : { port: opts.port }),
    requestTimeoutMs: chatTimeoutMs + 10_000,
    failure: 'router request failed',
    ...(log ? { log } : {}),
    onClose: () => dispatcher.close(),
  });
}
