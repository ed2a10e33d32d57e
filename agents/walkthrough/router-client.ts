// The walkthrough's side of the router: sign a demo user in, send a chat, read the routed agent's answer.
import { Agent, request } from 'undici';
import type { ChatTrace } from '../helpdesk-agent/agent-loop.ts';
import type { Attempt, ProbeTarget } from '../helpdesk-agent/compromised.ts';

export interface SignedIn {
  readonly token: string;
  readonly expiresAt: string;
  readonly user: {
    readonly login: string;
    readonly sub: string;
    readonly name: string;
    readonly role: string;
  };
}

/** The agent's answer as the router relays it. */
export interface AgentAnswer {
  readonly reply: string | null;
  readonly error: { readonly code: string; readonly message: string } | null;
  readonly trace?: ChatTrace;
  readonly attempts?: Attempt[];
}

export interface ChatAnswer {
  readonly status: number;
  readonly user: { readonly sub: string; readonly role: string };
  readonly routed_to: string;
  readonly misrouted: boolean;
  readonly agent: AgentAnswer;
}

export interface ChatBody {
  readonly message?: string;
  readonly inject?: boolean;
  readonly targets?: readonly ProbeTarget[];
}

// A chat may wait for a human approval; the walkthrough approves within seconds, the sidecar waits up to 5 minutes.
const dispatcher = new Agent({ headersTimeout: 330_000, bodyTimeout: 330_000, connect: { timeout: 5_000 } });

async function postJson(
  url: string,
  body: unknown,
  token?: string,
): Promise<{ status: number; json: unknown }> {
  const r = await request(url, {
    method: 'POST',
    dispatcher,
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const text = await r.body.text();
  try {
    return { status: r.statusCode, json: JSON.parse(text) };
  } catch {
    throw new Error(`${url}: HTTP ${r.statusCode}, not JSON: ${text.slice(0, 200)}`);
  }
}

export class RouterClient {
  /** The router's base URL; it changes when the router is recreated with a random host port. */
  baseUrl: string;

  constructor(baseUrl: string) {
    this.baseUrl = baseUrl;
  }

  async login(user: string): Promise<SignedIn> {
    const r = await postJson(`${this.baseUrl}/login`, { user });
    if (r.status !== 200) throw new Error(`login ${user}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
    const j = r.json as { token: string; expires_at: string; user: SignedIn['user'] };
    return { token: j.token, expiresAt: j.expires_at, user: j.user };
  }

  async chat(token: string, body: ChatBody): Promise<ChatAnswer> {
    const r = await postJson(`${this.baseUrl}/chat`, body, token);
    const j = r.json as Partial<ChatAnswer> & { error?: { code: string; message: string } };
    if (j.agent === undefined) {
      throw new Error(`chat: HTTP ${r.status} ${j.error ? `${j.error.code}: ${j.error.message}` : ''}`);
    }
    return { status: r.status, ...(j as Omit<ChatAnswer, 'status'>) };
  }
}
