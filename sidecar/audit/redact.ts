// Redaction of secrets from anything headed for the audit log: a JSON-safe deep copy with credentials replaced.

export const REDACTED = '[REDACTED]';

// Deeper structures are cut rather than risking the stack on hostile input.
const MAX_DEPTH = 64;

// A word of a key that, alone or inside a longer all-lowercase word, marks the key as secret.
const SECRET_FRAGMENTS = [
  'password',
  'passwd',
  'passphrase',
  'secret',
  'cookie',
  'credential',
  'authorization',
  'apikey',
  'privatekey',
  'accesskey',
];
const SECRET_WORDS = new Set(['auth', 'pwd', 'bearer', 'sig', 'signature', 'token']);
// `key` alone is too common (cache keys, map keys); these qualifiers make it a credential.
const KEY_QUALIFIERS = new Set([
  'api',
  'private',
  'access',
  'subscription',
  'signing',
  'encryption',
  'master',
  'client',
]);

const keyCache = new Map<string, boolean>();
const KEY_CACHE_LIMIT = 4096;

function splitWords(key: string): string[] {
  return key
    .replace(/([a-z0-9])([A-Z])/g, '$1 $2')
    .replace(/([A-Z])([A-Z][a-z])/g, '$1 $2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter((w) => w.length > 0);
}

function classifyKey(key: string): boolean {
  const words = splitWords(key);
  for (let i = 0; i < words.length; i++) {
    const word = words[i]!;
    if (SECRET_WORDS.has(word) || word.endsWith('token')) return true;
    if (SECRET_FRAGMENTS.some((f) => word.includes(f))) return true;
    if (word === 'key' && i > 0 && KEY_QUALIFIERS.has(words[i - 1]!)) return true;
  }
  return false;
}

/** Whether a key (header, field, query parameter, flag) names a secret. `max_tokens` does not; `token` does. */
export function isSecretKey(key: string): boolean {
  let secret = keyCache.get(key);
  if (secret === undefined) {
    secret = classifyKey(key);
    if (keyCache.size >= KEY_CACHE_LIMIT) keyCache.clear();
    keyCache.set(key, secret);
  }
  return secret;
}

function scrubParams(params: string, separator: string): string {
  let changed = false;
  const parts = params.split('&').map((part) => {
    const eq = part.indexOf('=');
    if (eq <= 0) return part;
    let name = part.slice(0, eq);
    try {
      name = decodeURIComponent(name.replaceAll('+', ' '));
    } catch {
      // A malformed escape: judge the raw name.
    }
    if (!isSecretKey(name)) return part;
    changed = true;
    return `${part.slice(0, eq)}=${REDACTED}`;
  });
  return changed ? separator + parts.join('&') : separator + params;
}

const USERINFO = /^(https?:\/\/)([^/?#]*)@/i;

/** Removes userinfo and secret-named query or fragment parameters from one http(s) URL, keeping its spelling. */
export function scrubUrl(url: string): string {
  let out = url;
  if (USERINFO.test(out)) out = out.replace(USERINFO, `$1${REDACTED}@`);
  const hashAt = out.indexOf('#');
  const fragment = hashAt >= 0 ? out.slice(hashAt + 1) : undefined;
  const beforeHash = hashAt >= 0 ? out.slice(0, hashAt) : out;
  const queryAt = beforeHash.indexOf('?');
  const base = queryAt >= 0 ? beforeHash.slice(0, queryAt) : beforeHash;
  const query = queryAt >= 0 ? scrubParams(beforeHash.slice(queryAt + 1), '?') : '';
  const frag = fragment !== undefined ? scrubParams(fragment, '#') : '';
  return base + query + frag;
}

const EMBEDDED_URL = /\bhttps?:\/\/[^\s"'<>`]+/gi;
const BEARER = /\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*/gi;
const BASIC = /^(basic)\s+[A-Za-z0-9+/]+=*$/i;
const HEADER_LINE = /^(\s*)([A-Za-z0-9_.-]+)(\s*:\s*)\S/;
const ASSIGNMENT = /^(-{0,2})([A-Za-z0-9_.-]+)=/;
const FLAG = /^--?([A-Za-z][A-Za-z0-9_-]*)$/;
// Every pattern above needs one of these; most strings in an action have none, and skip the rest.
const MIGHT_HOLD_SECRET = /[:=]|bearer|basic/i;

/** Scrubs credentials that travel inside a string: URLs, bearer tokens, `Name: value` headers, `NAME=value`. */
export function redactString(value: string): string {
  if (!MIGHT_HOLD_SECRET.test(value)) return value;
  let out = value;
  if (out.includes('://')) out = out.replace(EMBEDDED_URL, (u) => scrubUrl(u));
  out = out.replace(BEARER, `$1 ${REDACTED}`);
  if (BASIC.test(out)) return out.replace(BASIC, `$1 ${REDACTED}`);
  const header = out.includes(':') ? HEADER_LINE.exec(out) : null;
  if (header && isSecretKey(header[2]!)) return `${header[1]}${header[2]}${header[3]}${REDACTED}`;
  const assignment = out.includes('=') ? ASSIGNMENT.exec(out) : null;
  if (assignment && isSecretKey(assignment[2]!)) return `${assignment[1]}${assignment[2]}=${REDACTED}`;
  return out;
}

function copy(value: unknown, key: string, depth: number, ancestors: Set<object>): unknown {
  let v = value;
  if (typeof v === 'object' && v !== null && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    v = (v as { toJSON(key: string): unknown }).toJSON(key);
  }
  switch (typeof v) {
    case 'string':
      return redactString(v);
    case 'number':
      return Number.isFinite(v) ? v : null;
    case 'boolean':
      return v;
    case 'bigint':
      return v.toString();
    case 'object':
      break;
    default:
      return undefined;
  }
  if (v === null) return null;
  if (ancestors.has(v)) return '[Circular]';
  if (depth >= MAX_DEPTH) return '[Truncated]';
  ancestors.add(v);
  try {
    if (Array.isArray(v)) return copyArray(v, depth, ancestors);
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(v)) {
      const item = isSecretKey(k)
        ? REDACTED
        : copy((v as Record<string, unknown>)[k], k, depth + 1, ancestors);
      if (item === undefined) continue;
      // A plain assignment to "__proto__" would change the copy's prototype instead of adding a member.
      if (k === '__proto__') Object.defineProperty(out, k, { value: item, enumerable: true, writable: true });
      else out[k] = item;
    }
    return out;
  } finally {
    ancestors.delete(v);
  }
}

function copyArray(arr: readonly unknown[], depth: number, ancestors: Set<object>): unknown[] {
  const out = arr.map((item, i) => copy(item, String(i), depth + 1, ancestors) ?? null);
  // `['authorization', 'Bearer x']` header pairs and `['--token', 'x']` argv flags carry the secret next door.
  if (out.length === 2 && typeof out[0] === 'string' && typeof out[1] === 'string' && isSecretKey(out[0])) {
    out[1] = REDACTED;
    return out;
  }
  for (let i = 0; i < out.length - 1; i++) {
    const flag = typeof out[i] === 'string' ? FLAG.exec(out[i] as string) : null;
    if (
      flag &&
      isSecretKey(flag[1]!) &&
      typeof out[i + 1] === 'string' &&
      !(out[i + 1] as string).startsWith('-')
    ) {
      out[i + 1] = REDACTED;
      i++;
    }
  }
  return out;
}

/**
 * A deep copy safe to write to the audit log: JSON semantics (toJSON honoured, undefined and functions dropped,
 * non-finite numbers become null, bigints become strings, cycles become "[Circular]"), and every secret replaced.
 */
export function redact(value: unknown): unknown {
  return copy(value, '', 0, new Set());
}
