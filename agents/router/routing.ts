// Which role's agent serves a request: the token's role, unless the demo's injected routing bug says otherwise. Pure.
import { HELPDESK_ROLES, type HelpdeskRole, isHelpdeskRole } from './users.ts';

/** role → the agent's chat base URL, e.g. `http://basic-user-sidecar:8088`. */
export type AgentDirectory = Readonly<Record<HelpdeskRole, string>>;

/** from → to: requests of role `from` go to the agent of role `to` (the forum thread's nightmare, on purpose). */
export type Misroutes = ReadonlyMap<HelpdeskRole, HelpdeskRole>;

export interface Route {
  /** The role whose agent gets the request. */
  readonly role: HelpdeskRole;
  readonly url: string;
  /** True when the injected routing bug sent it somewhere other than the token's role. */
  readonly misrouted: boolean;
}

export const DEFAULT_AGENT_PORT = 8088;

/** Each agent shares its sidecar's network namespace, so it answers on the sidecar's name. */
export function defaultAgentDirectory(port = DEFAULT_AGENT_PORT): AgentDirectory {
  return Object.freeze(
    Object.fromEntries(HELPDESK_ROLES.map((r) => [r, `http://${r}-sidecar:${port}`])) as Record<
      HelpdeskRole,
      string
    >,
  );
}

/**
 * Parses `ROUTER_MISROUTE`: comma-separated `from:to` pairs of helpdesk roles (`basic-user:admin`). Empty or
 * unset: no bug. Anything else is an error, so a typo never silently turns the demo's bug off.
 */
export function parseMisroutes(value: string | undefined): Misroutes {
  const out = new Map<HelpdeskRole, HelpdeskRole>();
  const text = (value ?? '').trim();
  if (text === '') return out;
  for (const pair of text.split(',')) {
    const [from, to, ...rest] = pair.trim().split(':');
    if (rest.length > 0 || !isHelpdeskRole(from) || !isHelpdeskRole(to)) {
      throw new Error(
        `ROUTER_MISROUTE: "${pair.trim()}" is not from:to with roles ${HELPDESK_ROLES.join(', ')}`,
      );
    }
    if (out.has(from)) throw new Error(`ROUTER_MISROUTE: ${from} is listed twice`);
    if (from !== to) out.set(from, to);
  }
  return out;
}

export function routeFor(role: HelpdeskRole, agents: AgentDirectory, misroutes: Misroutes): Route {
  const target = misroutes.get(role) ?? role;
  return { role: target, url: agents[target], misrouted: target !== role };
}
