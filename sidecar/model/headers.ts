// Which headers cross the gateway: the agent's credentials never go upstream, the upstream's cookies never come back.
import type { IncomingHttpHeaders } from 'node:http';
import { isSecretKey, REDACTED } from '../audit/redact.ts';
import { hopByHop } from '../server/hop-by-hop.ts';
import { DECISION_HEADER } from '../server/http-errors.ts';

// Credentials under every name the vendors and their SDKs use, plus whatever else names a secret (isSecretKey:
// authorization, cookie, x-api-key, api-key, x-goog-api-key, x-auth-token, ...). The organisation and project
// headers go too: the operator's key decides which account pays, not the agent.
const AGENT_ONLY = new Set([
  'host',
  'content-length',
  'expect',
  'accept-encoding',
  'cookie',
  'authorization',
  'x-api-key',
  'api-key',
  'openai-organization',
  'openai-project',
]);

// Most messages carry no `connection` header, or none that names another header: the standard set is built once.
const STANDARD_HOP_BY_HOP = hopByHop(undefined);
const hopByHopFor = (connection: string | string[] | undefined) =>
  connection === undefined ? STANDARD_HOP_BY_HOP : hopByHop(connection);

/** The agent's headers minus credentials and hop-by-hop ones, plus the real key, as a flat [name, value, ...] list. */
export function upstreamRequestHeaders(
  rawHeaders: readonly string[],
  connection: string | string[] | undefined,
  key: readonly [string, string],
): string[] {
  const isHopByHop = hopByHopFor(connection);
  const out: string[] = [];
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string;
    const lower = name.toLowerCase();
    if (isHopByHop(lower) || AGENT_ONLY.has(lower)) continue;
    if (lower.startsWith('x-sidecar-') || isSecretKey(lower)) continue;
    out.push(name, rawHeaders[i + 1] as string);
  }
  // Usage is read from the response bytes, so they must arrive uncompressed.
  out.push('accept-encoding', 'identity', key[0], key[1]);
  return out;
}

const scrubKey = (value: string, key: string): string =>
  value.includes(key) ? value.replaceAll(key, REDACTED) : value;

/**
 * The upstream's response headers as the agent gets them, with the sidecar's decision id. Any occurrence of the
 * sidecar's key in a header value is replaced, as it is in error bodies: an upstream (or a gateway in front of the
 * vendor) that echoes the credential must not hand it to the agent.
 */
export function agentResponseHeaders(
  headers: IncomingHttpHeaders,
  decisionId: string,
  opts: { readonly dropLength: boolean; readonly key: string },
): Record<string, string | string[]> {
  const isHopByHop = hopByHopFor(headers.connection);
  const out: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined || isHopByHop(name)) continue;
    if (name === 'set-cookie' || name.startsWith('x-sidecar-')) continue;
    if (opts.dropLength && name === 'content-length') continue;
    out[name] = Array.isArray(value) ? value.map((v) => scrubKey(v, opts.key)) : scrubKey(value, opts.key);
  }
  out[DECISION_HEADER] = decisionId;
  return out;
}
