// Redaction of secrets from anything headed for the audit log: a JSON-safe deep copy with credentials replaced.
// The same copy, with `approver` set, is what a human approving a held action is shown (`redactForApprover`).

export const REDACTED = '[REDACTED]';

// What a credential is made of: letters, digits and `_-.~+/=:@%` (RFC 6750's b64token, base64 and base64url, JWTs,
// `user:pass` and percent-encoding). None of these is shell syntax: a run of them holds no command substitution
// (`$(`, backtick, `${`), separator (`;`, `|`, `&`, newline), redirection, quote, escape or glob. A value may be
// wrapped in one pair of quotes (`--password="…"`): inside, these characters mean themselves.
const TOKEN_SHAPED = /^(["']?)[A-Za-z0-9_.~+/=:@%-]+\1$/;
// An auth scheme and its token (`Basic dXNlcjpwdw==`): the approver is shown the scheme and not the token.
const SCHEME_AND_TOKEN = /^(["']?)([A-Za-z][A-Za-z0-9-]* +)[A-Za-z0-9_.~+/=:@%-]+\1$/;

/**
 * What the approver is shown where the audit log has `[REDACTED]` in place of `text`: `[REDACTED]` if `text` is
 * token-shaped, the scheme and `[REDACTED]` if it is an auth scheme and a token, else `text` itself. A span that
 * holds anything but a credential's characters may hide a command, and the approver must see what they approve.
 */
function approverView(text: string): string {
  if (TOKEN_SHAPED.test(text)) return REDACTED;
  if (SCHEME_AND_TOKEN.test(text)) return text.replace(SCHEME_AND_TOKEN, `$1$2${REDACTED}$1`);
  return text;
}

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

function scrubParams(params: string, separator: string, approver: boolean): string {
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
    let shown = REDACTED;
    if (approver) {
      const value = part.slice(eq + 1);
      shown = approverView(value);
      if (shown === value) return part;
    }
    changed = true;
    return `${part.slice(0, eq)}=${shown}`;
  });
  return changed ? separator + parts.join('&') : separator + params;
}

// `scheme://` as RFC 3986 spells a scheme; http-like schemes (`http`, `https`, `git+https`) also carry tokens in
// their query and fragment, which other schemes (`postgres`, `redis`, `ftp`) do not share a convention for.
const USERINFO = /^([A-Za-z][A-Za-z0-9+.-]*:\/\/)([^/?#]*)@/;
const HTTP_LIKE = /^(?:[A-Za-z0-9.-]+\+)?https?:/i;

/**
 * Removes credentials from one URL, keeping its spelling: the userinfo of any `scheme://user:pass@host` URL (and
 * any userinfo at all for http(s), where a lone token is often passed as the user name), plus secret-named query
 * and fragment parameters of http(s) URLs.
 */
export function scrubUrl(url: string, approver = false): string {
  const httpLike = HTTP_LIKE.test(url);
  let out = url;
  const userinfo = out.includes('@') ? USERINFO.exec(out) : null;
  if (userinfo && (httpLike || userinfo[2]!.includes(':'))) {
    const shown = approver ? approverView(userinfo[2]!) : REDACTED;
    out = `${userinfo[1]}${shown}@${out.slice(userinfo[0].length)}`;
  }
  if (!httpLike) return out;
  const hashAt = out.indexOf('#');
  const fragment = hashAt >= 0 ? out.slice(hashAt + 1) : undefined;
  const beforeHash = hashAt >= 0 ? out.slice(0, hashAt) : out;
  const queryAt = beforeHash.indexOf('?');
  const base = queryAt >= 0 ? beforeHash.slice(0, queryAt) : beforeHash;
  const query = queryAt >= 0 ? scrubParams(beforeHash.slice(queryAt + 1), '?', approver) : '';
  const frag = fragment !== undefined ? scrubParams(fragment, '#', approver) : '';
  return base + query + frag;
}

function isSchemeChar(c: number): boolean {
  return (
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2b || // +
    c === 0x2d || // -
    c === 0x2e // .
  );
}

function isLetter(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a);
}

// The rest of a URL after `://`: up to whitespace, a quote or an angle bracket.
const URL_BODY = /[^\s"'<>`]*/y;

/** Scrubs every `scheme://…` URL in a string. Finds `://` with indexOf and walks back over the scheme: linear time. */
function scrubUrls(s: string, approver: boolean): string {
  let out = '';
  let copied = 0;
  let from = 0;
  for (;;) {
    const sep = s.indexOf('://', from);
    if (sep < 0) break;
    let start = sep;
    while (start > from && isSchemeChar(s.charCodeAt(start - 1))) start--;
    while (start < sep && !isLetter(s.charCodeAt(start))) start++;
    URL_BODY.lastIndex = sep + 3;
    URL_BODY.exec(s);
    const end = URL_BODY.lastIndex;
    if (start < sep) {
      const url = s.slice(start, end);
      const scrubbed = scrubUrl(url, approver);
      if (scrubbed !== url) {
        out += s.slice(copied, start) + scrubbed;
        copied = end;
      }
    }
    from = Math.max(end, sep + 3);
  }
  return copied === 0 ? s : out + s.slice(copied);
}

const BEARER = /\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*/gi;
const BASIC = /^(basic)\s+[A-Za-z0-9+/]+=*$/i;
// `Name: value` at the start of any line (raw HTTP, header dumps, env files written as YAML).
const HEADER_LINE = /^[ \t]*([A-Za-z0-9_.-]+)[ \t]*:[ \t]*(?=[^\s])/gm;
// `'Name: value'` / `"Name: value"`: a header passed as one quoted argument, as in `curl -H 'Authorization: …'`.
const QUOTED_HEADER = /(['"])([A-Za-z0-9_.-]+)[ \t]*:[ \t]*(?=[^\s'"])/g;
// `NAME=value`, `--flag=value` and `--flag value` at the start of a token: after whitespace, `;`, `|` or `(`,
// optionally inside a quote (`export "TOKEN=…"`).
const TOKEN_ASSIGNMENT = /(?:^|(?<=[\s;|(]))(['"]?)(-{0,2})([A-Za-z0-9_.-]+)=/g;
const TOKEN_FLAG = /(?:^|(?<=[\s;|(]))--([A-Za-z][A-Za-z0-9_-]*)[ \t]+(?=[^\s-])/g;
// `-H Name:value`, `-HName:value`, `--header Name:value`: a header passed unquoted as one shell word.
const HEADER_FLAG = /(?:^|(?<=[\s;|&(]))(?:-H|--header[ \t=])[ \t]*([A-Za-z][A-Za-z0-9_.-]*):/g;
// A member of JSON or a dict literal with a quoted value: `"key": "`, `'key': '`, and `\"key\": \"` as JSON is
// written inside a double-quoted shell argument. The match ends after the value's opening quote.
const JSON_MEMBER = /(\\?)(["'])([A-Za-z0-9_.$-]+)\1\2[ \t]*:[ \t]*\1(["'])/g;
// `{key: "` and `, key: "`: a JS object literal member with an unquoted key.
const JS_MEMBER = /[{,][ \t]*([A-Za-z_$][A-Za-z0-9_$]*)[ \t]*:[ \t]*(["'])/g;
// curl's `-u`/`--user` and `-U`/`--proxy-user` (alone, attached as in `-ualice:pw`, or ending a cluster such as
// `-sSu`), up to the opening quote of the value if it has one. Applied only to strings that mention curl: other
// commands use `-u`/`--user` for `uid:gid` (docker) or take paths.
const CURL_USER = /(?:^|(?<=[\s;|&(]))(?:-[A-TV-Za-tv-z]*[uU][ \t]*|--(?:proxy-)?user(?:[ \t]+|=))(['"]?)/g;
const CURL = /\bcurl\b/i;
const CURL_COMMAND = /(?:^|[\\/])curl(?:\.exe)?$/i;
const CURL_USER_ARG = /^(?:-[A-TV-Za-tv-z]*[uU]|--(?:proxy-)?user=?)/;
const FLAG = /^--?([A-Za-z][A-Za-z0-9_-]*)$/;
// Every pattern above needs one of these; most strings in an action have none, and skip the rest.
const MIGHT_HOLD_SECRET = /[:=]|--|bearer|basic/i;

const WHITESPACE_END = /[^\s]*/y;

/** Where an unquoted value starting at `at` ends: the next whitespace or the end of the string. */
function wordEnd(s: string, at: number): number {
  WHITESPACE_END.lastIndex = at;
  WHITESPACE_END.exec(s);
  return WHITESPACE_END.lastIndex;
}

/** Where a line starting before `at` ends, not counting a `\r` before the `\n`. */
function lineEnd(s: string, at: number): number {
  let end = s.indexOf('\n', at);
  if (end < 0) end = s.length;
  if (end > at && s.charCodeAt(end - 1) === 0x0d) end--;
  return end;
}

/** Where a header value starting at `at` ends: at the end of its line and of any folded continuation lines (lines
 * that start with a space or a tab, RFC 9112's obs-fold). */
function headerEnd(s: string, at: number): number {
  let end = lineEnd(s, at);
  for (;;) {
    let next = end;
    if (s.charCodeAt(next) === 0x0d) next++;
    if (s.charCodeAt(next) !== 0x0a) return end;
    const c = s.charCodeAt(next + 1);
    if (c !== 0x20 && c !== 0x09) return end;
    end = lineEnd(s, next + 1);
  }
}

// A run of a shell word's ordinary characters: up to whitespace, a quote, a backslash or one of `;&|<>()`.
const WORD_RUN = /[^\s"'\\;&|<>()]*/y;

/** Where the shell word that continues at `at` ends: at unquoted whitespace or `;&|<>()`, skipping quoted runs
 * and backslash escapes. An unclosed quote runs to the end of its line. */
function shellWordEnd(s: string, at: number): number {
  let i = at;
  for (;;) {
    WORD_RUN.lastIndex = i;
    WORD_RUN.exec(s);
    i = WORD_RUN.lastIndex;
    const c = s[i];
    if (c === '"' || c === "'") {
      const q = quoteEnd(s, i + 1, c);
      i = q.closed ? q.end + 1 : q.end;
    } else if (c === '\\' && i + 1 < s.length) {
      i += 2;
    } else {
      return c === '\\' ? i + 1 : i;
    }
  }
}

/**
 * Where a quoted JSON or dict string value whose body starts at `at` ends (before its closing quote), honouring
 * backslash escapes. With `escaped`, the string is itself inside a JSON or shell string, so its quotes are written
 * `\"` and an escaped quote in it `\\\"`. An unclosed value runs to the end of its line.
 */
function jsonStringEnd(s: string, at: number, quote: string, escaped: boolean): number {
  let i = at;
  while (i < s.length) {
    const c = s[i]!;
    if (c === '\n') break;
    if (c === quote && !escaped) return i;
    if (c !== '\\') {
      i++;
    } else if (!escaped) {
      i += 2;
    } else if (s[i + 1] === quote) {
      return i;
    } else if (s[i + 1] === '\\') {
      // `\\` is a backslash one level down, which escapes the character after it (itself possibly `\"`).
      i += s[i + 2] === '\\' ? 4 : 3;
    } else {
      i += 2;
    }
  }
  const end = Math.min(i, s.length);
  return end > at && s.charCodeAt(end - 1) === 0x0d ? end - 1 : end;
}

/**
 * The `user:password` argument of curl's `-u` with the password replaced. A value with an empty password
 * (`-u sk_live_…:`, as APIs that take the key as user name are called) loses the user name instead. A value with
 * no `:`, or whose `:` starts `://` (a URL), is kept.
 */
function scrubUserPassword(value: string, approver: boolean): string {
  const colon = value.indexOf(':');
  if (colon < 0 || value.startsWith('//', colon + 1)) return value;
  if (colon === value.length - 1) {
    if (colon === 0) return value;
    return `${approver ? approverView(value.slice(0, colon)) : REDACTED}:`;
  }
  if (value.endsWith(REDACTED) && value.length === colon + 1 + REDACTED.length) return value;
  return `${value.slice(0, colon + 1)}${approver ? approverView(value.slice(colon + 1)) : REDACTED}`;
}

/** Scrubs the value of every curl `-u`/`--user` argument in a string. */
function redactCurlUsers(s: string, approver: boolean): string {
  let out = '';
  let copied = 0;
  CURL_USER.lastIndex = 0;
  for (let m = CURL_USER.exec(s); m !== null; m = CURL_USER.exec(s)) {
    const at = CURL_USER.lastIndex;
    const quote = m[1]!;
    const end = quote ? quoteEnd(s, at, quote).end : shellWordEnd(s, at);
    const value = s.slice(at, end);
    const scrubbed = scrubUserPassword(value, approver);
    if (scrubbed !== value) {
      out += s.slice(copied, at) + scrubbed;
      copied = end;
    }
    CURL_USER.lastIndex = Math.max(end, at + 1);
  }
  return copied === 0 ? s : out + s.slice(copied);
}

// The rest of a quoted run on its line, one pattern per quote: scanning stops at the closing quote or the line's
// end, never beyond, so a line full of quoted values is scanned once.
const QUOTED_RUN: Record<string, RegExp> = { "'": /[^'\n]*/y, '"': /[^"\n]*/y };

/** Where a quoted run that opens before `at` ends: at its closing quote, or at the line's end if it is unclosed. */
function quoteEnd(s: string, at: number, quote: string): { end: number; closed: boolean } {
  const run = QUOTED_RUN[quote]!;
  run.lastIndex = at;
  run.exec(s);
  const end = run.lastIndex;
  if (end < s.length && s[end] === quote) return { end, closed: true };
  return { end: end > at && s.charCodeAt(end - 1) === 0x0d ? end - 1 : end, closed: false };
}

/**
 * Where a value starting at `at` ends: through its closing quote if it is quoted, before the closing quote of the
 * word it sits in (`"TOKEN=…"`), else at the next whitespace. An unclosed quote runs to the end of the line.
 */
function valueEnd(s: string, at: number, enclosingQuote: string): number {
  const first = s[at];
  if (first === '"' || first === "'") {
    const q = quoteEnd(s, at + 1, first);
    return q.closed ? q.end + 1 : q.end;
  }
  if (enclosingQuote) return quoteEnd(s, at, enclosingQuote).end;
  return wordEnd(s, at);
}

/**
 * Replaces, for every match of `pattern` whose `group` names a secret, the value that starts where the match ends
 * and runs to `end(match)`. Matching resumes after a replaced value; `pattern` must be global. With `approver`, a
 * value is replaced as `approverView` says, and one shown as it is is searched for further matches.
 */
function redactValues(
  s: string,
  pattern: RegExp,
  group: number,
  end: (s: string, m: RegExpExecArray) => number,
  approver: boolean,
): string {
  let out = '';
  let copied = 0;
  pattern.lastIndex = 0;
  for (let m = pattern.exec(s); m !== null; m = pattern.exec(s)) {
    const at = pattern.lastIndex;
    if (!isSecretKey(m[group]!)) continue;
    const stop = end(s, m);
    // Nothing to hide, or an earlier rule (the URL scrub) has replaced it already.
    if (stop <= at || (stop - at === REDACTED.length && s.startsWith(REDACTED, at))) continue;
    let shown = REDACTED;
    if (approver) {
      const value = s.slice(at, stop);
      shown = approverView(value);
      if (shown === value) continue;
    }
    out += `${s.slice(copied, at)}${shown}`;
    copied = stop;
    pattern.lastIndex = stop;
  }
  return copied === 0 ? s : out + s.slice(copied);
}

/**
 * Scrubs credentials that travel inside a string, wherever in it they sit: URL userinfo (any scheme) and
 * secret-named query parameters (http), bearer tokens, `Name: value` header lines (on any line with their folded
 * continuation lines, quoted as one argument, or unquoted after `-H`), quoted values of JSON and dict literal
 * members, `NAME=value`, `--flag=value` and `--flag value` tokens, and the password of curl's `-u user:password`.
 * Only values of names that `isSecretKey` accepts are replaced (and curl's `-u` password). Linear time: it runs
 * on every string of every audited action. With `approver`, only token-shaped text is hidden (`approverView`).
 */
export function redactString(value: string, approver = false): string {
  if (!MIGHT_HOLD_SECRET.test(value)) return value;
  let out = value;
  if (out.includes('://')) out = scrubUrls(out, approver);
  out = out.replace(BEARER, `$1 ${REDACTED}`);
  if (BASIC.test(out)) return out.replace(BASIC, `$1 ${REDACTED}`);
  if (out.includes(':')) {
    out = redactValues(out, HEADER_LINE, 1, (s, m) => headerEnd(s, m.index + m[0].length), approver);
    out = redactValues(
      out,
      QUOTED_HEADER,
      2,
      (s, m) => quoteEnd(s, m.index + m[0].length, m[1]!).end,
      approver,
    );
    if (out.includes('-H') || out.includes('--header')) {
      out = redactValues(out, HEADER_FLAG, 1, (s, m) => shellWordEnd(s, m.index + m[0].length), approver);
    }
    if (out.includes('"') || out.includes("'")) {
      out = redactValues(
        out,
        JSON_MEMBER,
        3,
        (s, m) => jsonStringEnd(s, m.index + m[0].length, m[4]!, m[1] === '\\'),
        approver,
      );
      out = redactValues(
        out,
        JS_MEMBER,
        1,
        (s, m) => jsonStringEnd(s, m.index + m[0].length, m[2]!, false),
        approver,
      );
    }
    if (CURL.test(out)) out = redactCurlUsers(out, approver);
  }
  if (out.includes('=')) {
    out = redactValues(
      out,
      TOKEN_ASSIGNMENT,
      3,
      (s, m) => valueEnd(s, m.index + m[0].length, m[1]!),
      approver,
    );
  }
  if (out.includes('--')) {
    out = redactValues(out, TOKEN_FLAG, 1, (s, m) => valueEnd(s, m.index + m[0].length, ''), approver);
  }
  return out;
}

function inKeyOrder(keys: string[]): string[] {
  for (let i = 1; i < keys.length; i++) if (!(keys[i - 1]! < keys[i]!)) return keys.sort();
  return keys;
}

/**
 * The approver's view of a secret-named key's value, given its approver copy (a fresh structure, changed here in
 * place): every token-shaped string, number or boolean in it is hidden; anything else (a command, a PEM block, a
 * `Bearer [REDACTED]` already scrubbed) is shown. A token-shaped copy holds no `[REDACTED]`, so it is the action's
 * own text: only that is hidden.
 */
function hideTokens(copied: unknown): unknown {
  if (typeof copied === 'string') return approverView(copied);
  if (typeof copied === 'number' || typeof copied === 'boolean') return REDACTED;
  if (typeof copied === 'object' && copied !== null) {
    const members = copied as Record<string, unknown>;
    for (const k of Object.keys(members)) members[k] = hideTokens(members[k]);
  }
  return copied;
}

function copy(
  value: unknown,
  key: string,
  depth: number,
  ancestors: Set<object>,
  approver: boolean,
): unknown {
  let v = value;
  if (typeof v === 'object' && v !== null && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    v = (v as { toJSON(key: string): unknown }).toJSON(key);
  }
  switch (typeof v) {
    case 'string':
      return redactString(v, approver);
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
    if (Array.isArray(v)) return copyArray(v, depth, ancestors, approver);
    const out: Record<string, unknown> = {};
    // Copied in code-unit key order, the order of canonical JSON, so the audit entry serialises natively.
    for (const k of inKeyOrder(Object.keys(v))) {
      const member = (v as Record<string, unknown>)[k];
      const item = isSecretKey(k)
        ? approver
          ? hideTokens(copy(member, k, depth + 1, ancestors, true))
          : REDACTED
        : copy(member, k, depth + 1, ancestors, approver);
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

function copyArray(
  arr: readonly unknown[],
  depth: number,
  ancestors: Set<object>,
  approver: boolean,
): unknown[] {
  const out = arr.map((item, i) => copy(item, String(i), depth + 1, ancestors, approver) ?? null);
  // `['authorization', 'Bearer x']` header pairs and `['--token', 'x']` argv flags carry the secret next door.
  if (out.length === 2 && typeof out[0] === 'string' && typeof out[1] === 'string' && isSecretKey(out[0])) {
    out[1] = approver ? approverView(out[1]) : REDACTED;
    return out;
  }
  // curl's `-u user:password` in argv: the string rule needs the word `curl` in the same string.
  let curl = false;
  for (let i = 0; i < out.length; i++) {
    const item = out[i];
    if (typeof item !== 'string') continue;
    if (!curl) {
      curl = CURL_COMMAND.test(item);
      continue;
    }
    const flag = CURL_USER_ARG.exec(item);
    if (!flag) continue;
    if (flag[0].length < item.length) {
      out[i] = flag[0] + scrubUserPassword(item.slice(flag[0].length), approver);
    } else if (!item.endsWith('=') && typeof out[i + 1] === 'string') {
      out[i + 1] = scrubUserPassword(out[i + 1] as string, approver);
      i++;
    }
  }
  for (let i = 0; i < out.length - 1; i++) {
    const flag = typeof out[i] === 'string' ? FLAG.exec(out[i] as string) : null;
    if (
      flag &&
      isSecretKey(flag[1]!) &&
      typeof out[i + 1] === 'string' &&
      !(out[i + 1] as string).startsWith('-')
    ) {
      out[i + 1] = approver ? approverView(out[i + 1] as string) : REDACTED;
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
  return copy(value, '', 0, new Set(), false);
}

/**
 * The copy of a held action shown to its approvers: `redact()`'s copy, except that text is hidden only where it is
 * token-shaped (letters, digits and `_-.~+/=:@%`, optionally in one pair of quotes; see `approverView`). The
 * approval is bound to the hash of the real action, so a hidden span must never hold anything but the secret:
 * where `redact()` would hide a span holding anything else (`Bearer $(rm -rf ~)`, `--token=abc;curl …|sh`), the
 * approver is shown it as it is, secret included. Under a secret-named key, each token-shaped leaf is hidden and
 * the rest shown. The approver is a trusted human on the authenticated admin channel; seeing a secret is better
 * than approving a hidden command.
 */
export function redactForApprover(value: unknown): unknown {
  return copy(value, '', 0, new Set(), true);
}
