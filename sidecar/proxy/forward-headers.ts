// Header shaping for forwarded requests: hop-by-hop headers stripped both ways, Host set to the target the agent
// named, Via appended, and the decision id header owned by the sidecar alone.
import type { IncomingMessage } from 'node:http';
import { hopByHop } from '../server/hop-by-hop.ts';
import { DECISION_HEADER } from '../server/http-errors.ts';

const VIA = '1.1 agent-sidecar';

/** Response headers as undici parses them: lower-case names, repeated ones as arrays. */
export type ResponseHeaders = Readonly<Record<string, string | string[] | undefined>>;

// Headers that let a request claim another host, client, scheme, method or path than its request line. Upstreams
// behind a trusted proxy honour them (Express `trust proxy`, Django USE_X_FORWARDED_HOST, Spring's
// ForwardedHeaderFilter, method-override middleware, IIS URL Rewrite), so an agent's own would reach a host, method
// or path the policy never judged. Only the request line and the Host the sidecar writes say what the request is.
const CLAIMS_ANOTHER_REQUEST = new Set([
  'forwarded',
  'x-forwarded-for',
  'x-forwarded-host',
  'x-forwarded-port',
  'x-forwarded-prefix',
  'x-forwarded-proto',
  'x-forwarded-scheme',
  'x-real-ip',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'x-original-url',
  'x-rewrite-url',
  'x-original-method',
]);

// Most messages name nothing in Connection beyond the standard set: they share one test instead of building a Set.
const STANDARD = hopByHop(undefined);

function hopByHopFor(connection: string | string[] | undefined): (lowerName: string) => boolean {
  return connection === undefined || connection === 'keep-alive' ? STANDARD : hopByHop(connection);
}

/**
 * The agent's headers as a flat name/value list for undici, minus hop-by-hop, Host, Expect, the decision id and
 * headers that claim another host, client, method or path (CLAIMS_ANOTHER_REQUEST).
 */
export function upstreamRequestHeaders(req: IncomingMessage, hostHeader: string): string[] {
  const isHopByHop = hopByHopFor(req.headers.connection);
  const out: string[] = [];
  const raw = req.rawHeaders;
  let via: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!;
    const lower = name.toLowerCase();
    // Node answered any `expect: 100-continue` already; the upstream gets the body without a second handshake.
    // The decision id is the sidecar's to give: one sent by the agent could pass for a decision never made.
    if (isHopByHop(lower) || lower === 'host' || lower === 'expect' || lower === DECISION_HEADER) continue;
    if (CLAIMS_ANOTHER_REQUEST.has(lower)) continue;
    if (lower === 'via') {
      via = via === undefined ? raw[i + 1]! : `${via}, ${raw[i + 1]!}`;
      continue;
    }
    out.push(name, raw[i + 1]!);
  }
  out.push('host', hostHeader, 'via', via === undefined ? VIA : `${via}, ${VIA}`);
  return out;
}

/**
 * The upstream's response headers for the agent as a flat name/value list (any name, `__proto__` included),
 * minus hop-by-hop, with Via and the sidecar's decision id.
 */
export function agentResponseHeaders(headers: ResponseHeaders, decisionId: string): Array<string | string[]> {
  const isHopByHop = hopByHopFor(headers['connection']);
  const out: Array<string | string[]> = [];
  let via: string | undefined;
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || isHopByHop(name) || name === DECISION_HEADER) continue;
    if (name === 'via') via = typeof value === 'string' ? value : value.join(', ');
    else out.push(name, value);
  }
  out.push('via', via === undefined ? VIA : `${via}, ${VIA}`, DECISION_HEADER, decisionId);
  return out;
}
