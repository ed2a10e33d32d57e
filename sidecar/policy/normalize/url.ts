// Normalises http(s) URLs with the WHATWG parser into the parts policy compares: scheme, host, port, path segments.
import { canonicalHost } from './host.ts';
import { segmentsStartWith } from './path.ts';

export interface NormalizedUrl {
  readonly scheme: 'http' | 'https';
  /** Lower-cased, IDNA (punycode) host without a trailing dot; IPv6 in brackets, IPv4-mapped IPv6 as dotted IPv4. */
  readonly host: string;
  readonly port: number;
  /** Path segments after dot-segment removal, empty segments dropped, unreserved escapes decoded. */
  readonly segments: readonly string[];
  /** Canonical form without fragment: scheme://host:port/path?query, unreserved escapes decoded in path and query. */
  readonly canonical: string;
  readonly hasQuery: boolean;
}
export type UrlFailure = { readonly ok: false; readonly why: string };

const DEFAULT_PORTS: Record<string, number> = { 'http:': 80, 'https:': 443 };
// Bytes a naive parser and the WHATWG parser disagree on, or that no well-formed URL carries.
const RAW_FORBIDDEN = /[\\\s\u0000-\u001f\u007f]/;
// Escapes that servers may decode into separators: an ALLOW must never depend on them.
const AMBIGUOUS_ESCAPE = /%(2f|5c|00)/i;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
// Tomcat, Jetty and Spring drop a segment's `;parameters` before resolving dot segments: `..;x` is `..` to them.
const DOT_SEGMENT = /^\.\.?(?:;|$)/;

/** Decodes escapes of unreserved characters and upper-cases the rest: equivalent for every server (RFC 3986 6.2.2). */
function normalizeEscapes(text: string): string {
  return text.replace(/%([0-9a-fA-F]{2})/g, (_m, hex: string) => {
    const ch = String.fromCharCode(Number.parseInt(hex, 16));
    return UNRESERVED.test(ch) ? ch : `%${hex.toUpperCase()}`;
  });
}

export function normalizeUrl(raw: unknown): { readonly ok: true; readonly url: NormalizedUrl } | UrlFailure {
  if (typeof raw !== 'string') return { ok: false, why: 'url is not a string' };
  if (RAW_FORBIDDEN.test(raw))
    return { ok: false, why: 'url contains a backslash, whitespace or control character' };
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return { ok: false, why: 'url does not parse' };
  }
  const port = DEFAULT_PORTS[u.protocol];
  if (port === undefined) return { ok: false, why: 'url scheme is not http or https' };
  if (u.username !== '' || u.password !== '') return { ok: false, why: 'url carries userinfo' };
  // The parser already resolved `.`/`..` (including %2e forms); re-check what it left behind.
  const rawSegments = u.pathname.split('/').filter((s) => s !== '');
  if (rawSegments.some((s) => AMBIGUOUS_ESCAPE.test(s))) {
    return { ok: false, why: 'url path contains an encoded slash, backslash or NUL' };
  }
  const segments = rawSegments.map(normalizeEscapes);
  if (segments.some((s) => DOT_SEGMENT.test(s))) return { ok: false, why: 'url path has dot segments' };
  // `a..b` or a second trailing dot is no DNS name, and `api.` would re-parse as `api`: refuse rather than guess.
  const host = canonicalHost(u.hostname);
  if (host === undefined) return { ok: false, why: 'url host is empty or has an empty label' };
  const scheme = u.protocol === 'https:' ? 'https' : 'http';
  const effectivePort = u.port === '' ? port : Number(u.port);
  // The query's escapes are canonicalised like a segment's (`%65` is `e` to every server); nothing else changes.
  const canonical = `${scheme}://${host}:${effectivePort}/${segments.join('/')}${normalizeEscapes(u.search)}`;
  return {
    ok: true,
    url: { scheme, host, port: effectivePort, segments, canonical, hasQuery: u.search !== '' },
  };
}

/** Origin equal, then path segments of `prefix` lead `url`'s. Query and fragment never take part. */
export function urlStartsWith(url: NormalizedUrl, prefix: NormalizedUrl): boolean {
  return (
    url.scheme === prefix.scheme &&
    url.host === prefix.host &&
    url.port === prefix.port &&
    segmentsStartWith(url.segments, prefix.segments)
  );
}
