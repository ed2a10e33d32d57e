// Signed per-call context: the short-lived EdDSA token a sidecar attaches to each forwarded tool call, and its verifier.
// Deliberately light (jose, node:crypto and canonical.ts only): third-party MCP servers import verifyContextToken on
// its own.
import { KeyObject as NodeKeyObject, sign as signBytes } from 'node:crypto';
import type { CryptoKey, KeyObject } from 'jose';
import { CompactSign, compactVerify, decodeJwt, decodeProtectedHeader } from 'jose';
import { canonicalJson, sha256Hex } from '../policy/canonical.ts';

/** HTTP header that carries the token from a sidecar to a tool server. */
export const CONTEXT_HEADER = 'x-agent-context';
/** JWS `typ` of a context token; a token of any other type is refused. */
export const CONTEXT_TOKEN_TYPE = 'agent-context+jwt';
export const CONTEXT_TOKEN_ALG = 'EdDSA';
export const DEFAULT_CONTEXT_AUDIENCE = 'agent-sidecar-tools';
export const ISSUER_PREFIX = 'agent-sidecar:';

const DEFAULT_TTL_SECONDS = 60;
const DEFAULT_CLOCK_TOLERANCE_SECONDS = 5;
const DEFAULT_MAX_TTL_SECONDS = 300;
/** A context token is a few hundred bytes; anything far larger is not one, and is refused before decoding. */
const MAX_TOKEN_LENGTH = 8192;
// The signature segment may be empty so an unsigned (alg "none") token is reported as a bad signature, not as noise.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

/** A public verification key: what jose's importJWK returns, or a node:crypto KeyObject. */
export type KeyLike = CryptoKey | KeyObject;

/** The key a sidecar signs with: its role's private key and that key's id (the JWK thumbprint). */
export interface SigningKey {
  readonly privateKey: KeyLike;
  readonly kid: string;
}

/** Returns the public keys trusted for a role; empty or undefined when the role is unknown. */
export type RoleKeyResolver = (
  role: string,
) => readonly KeyLike[] | undefined | Promise<readonly KeyLike[] | undefined>;
export type RoleKeySource = ReadonlyMap<string, readonly KeyLike[]> | RoleKeyResolver;

/** What a sidecar vouches for on one call. `args` are hashed, never embedded. */
export interface CallContext {
  readonly agent: string;
  readonly role: string;
  /** Verified end user the agent acts for, or null when there is none. */
  readonly sub: string | null;
  readonly decisionId: string;
  readonly tool: string;
  readonly args: unknown;
}

export interface MintOptions {
  readonly ttlSeconds?: number;
  /** Clock in milliseconds since the epoch. */
  readonly now?: () => number;
  /** The `aud` claim: the one tool server this token is for (default `agent-sidecar-tools`). */
  readonly audience?: string;
}

export interface ContextClaims {
  readonly iss: string;
  readonly aud: string;
  readonly agent: string;
  readonly role: string;
  readonly sub: string | null;
  /** The sidecar's decision id: joins the tool server's log to the sidecar's audit chain. */
  readonly jti: string;
  readonly tool: string;
  readonly args_sha256: string;
  readonly iat: number;
  readonly exp: number;
}

export const REFUSAL_REASONS = [
  'missing',
  'malformed',
  'bad_signature',
  'unknown_role',
  'expired',
  'not_yet_valid',
  'wrong_audience',
  'wrong_tool',
  'args_mismatch',
  'role_not_allowed',
  'ttl_too_long',
] as const;
export type ContextRefusalReason = (typeof REFUSAL_REASONS)[number];

export type ContextVerification =
  | { readonly ok: true; readonly claims: ContextClaims }
  | { readonly ok: false; readonly reason: ContextRefusalReason };

export interface VerifyOptions {
  /** Public keys per role. A token is checked only against the keys of the role it claims. */
  readonly roleKeys: RoleKeySource;
  /** The tool server's OWN role -> tools map; the sidecar's policy is not trusted here. */
  readonly allowlist: Readonly<Record<string, readonly string[]>>;
  /** The tool actually being called, and its actual arguments. */
  readonly tool: string;
  readonly args: unknown;
  /**
   * This tool server's OWN audience: the `audience` its upstream entry has in the sidecar's config (default
   * `agent-sidecar-tools`). A token names only the audience and the tool server's own tool name, so a server
   * that shares an audience with another server offering a tool of the same name accepts tokens minted for it:
   * give every tool server its own audience and verify with it here.
   */
  readonly audience?: string;
  /** Clock in milliseconds since the epoch. */
  readonly now?: () => number;
  readonly clockToleranceSeconds?: number;
  /** Refuse tokens whose exp - iat exceeds this, whatever their signature. */
  readonly maxTtlSeconds?: number;
}

/** SHA-256 (hex) of the canonical JSON of a call's arguments; absent arguments hash as `{}`. */
export function argsDigest(args: unknown): string {
  return sha256Hex(canonicalJson(args ?? {}));
}

/**
 * Signs the context of one call. Throws (TypeError/RangeError) only on programmer error:
 * empty identifiers, a non-positive TTL, or arguments that are not JSON.
 * A node:crypto KeyObject (what importSigningKey returns) is signed synchronously, as in mintContextTokenSync;
 * a WebCrypto CryptoKey is signed by jose. Both give the same token, byte for byte (Ed25519 is deterministic).
 */
export async function mintContextToken(
  key: SigningKey,
  ctx: CallContext,
  opts: MintOptions = {},
): Promise<string> {
  const claims = contextClaims(ctx, opts);
  if (key.privateKey instanceof NodeKeyObject) return signCompact(key.kid, claims, key.privateKey);
  // CompactSign rather than SignJWT: the claims are built and typed here (sub may be null), jose only signs.
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: CONTEXT_TOKEN_ALG, kid: key.kid, typ: CONTEXT_TOKEN_TYPE })
    .sign(key.privateKey);
}

/**
 * mintContextToken without a promise, for a sidecar's hot path: the key must be an Ed25519 private node:crypto
 * KeyObject (importSigningKey returns one); any other key is a TypeError.
 */
export function mintContextTokenSync(key: SigningKey, ctx: CallContext, opts: MintOptions = {}): string {
  const claims = contextClaims(ctx, opts);
  if (!(key.privateKey instanceof NodeKeyObject)) {
    throw new TypeError(
      'context token: synchronous signing needs a node:crypto KeyObject (importSigningKey)',
    );
  }
  return signCompact(key.kid, claims, key.privateKey);
}

function contextClaims(ctx: CallContext, opts: MintOptions): ContextClaims {
  for (const field of ['agent', 'role', 'decisionId', 'tool'] as const) {
    if (typeof ctx[field] !== 'string' || ctx[field] === '')
      throw new TypeError(`context token: empty ${field}`);
  }
  if (ctx.sub !== null && typeof ctx.sub !== 'string')
    throw new TypeError('context token: sub must be a string or null');
  const ttl = opts.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  if (!Number.isInteger(ttl) || ttl < 1)
    throw new RangeError('context token: ttlSeconds must be a positive integer');
  const iat = Math.floor((opts.now ?? Date.now)() / 1000);
  return {
    iss: ISSUER_PREFIX + ctx.agent,
    aud: opts.audience ?? DEFAULT_CONTEXT_AUDIENCE,
    agent: ctx.agent,
    role: ctx.role,
    sub: ctx.sub,
    jti: ctx.decisionId,
    tool: ctx.tool,
    args_sha256: argsDigest(ctx.args),
    iat,
    exp: iat + ttl,
  };
}

/**
 * The compact JWS that jose's CompactSign would produce (header members in the same order), signed with
 * node:crypto. Why not jose here: it signs through WebCrypto, which is async only, so every call would pay a
 * libuv thread-pool round trip (another thread woken, then the event loop again) for a signature that takes
 * ~25 µs inline. jose still does all verification.
 */
function signCompact(kid: string, claims: ContextClaims, privateKey: NodeKeyObject): string {
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
    throw new TypeError('context token: the signing key must be an Ed25519 private key');
  }
  const header = JSON.stringify({ alg: CONTEXT_TOKEN_ALG, kid, typ: CONTEXT_TOKEN_TYPE });
  const input = `${base64url(header)}.${base64url(JSON.stringify(claims))}`;
  return `${input}.${signBytes(null, Buffer.from(input), privateKey).toString('base64url')}`;
}

function base64url(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}

/**
 * Checks a context token against the call it arrived with. Never throws: every failure is a reason.
 * Order: shape, header, claimed role's keys, signature, claim types, audience, lifetime, tool, arguments, allowlist.
 * Pass `audience`: the tool server's own (see VerifyOptions.audience). The token binds the tool only by the name
 * this server gives it, so the audience is what keeps a token minted for another server's same-named tool out.
 */
export async function verifyContextToken(
  token: string | null | undefined,
  opts: VerifyOptions,
): Promise<ContextVerification> {
  try {
    return await verify(token, opts);
  } catch {
    // Only a throwing resolver or a non-JSON `args` can get here; both mean the call cannot be vouched for.
    return refuse('malformed');
  }
}

async function verify(token: string | null | undefined, opts: VerifyOptions): Promise<ContextVerification> {
  if (token === undefined || token === null || (typeof token === 'string' && token.trim() === '')) {
    return refuse('missing');
  }
  if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) {
    return refuse('malformed');
  }

  let header: Record<string, unknown>;
  let unverifiedRole: unknown;
  try {
    header = decodeProtectedHeader(token) as Record<string, unknown>;
    unverifiedRole = decodeJwt(token)['role'];
  } catch {
    return refuse('malformed');
  }
  // Checked before any key is touched: no 'none', no HMAC with a public key as secret, no other curve.
  if (header['alg'] !== CONTEXT_TOKEN_ALG) return refuse('bad_signature');
  if ('crit' in header || 'b64' in header || 'jwk' in header || 'jku' in header || 'x5u' in header) {
    return refuse('malformed');
  }
  if (typeof unverifiedRole !== 'string' || unverifiedRole === '') return refuse('malformed');

  // The claimed role picks the keys, so a role's key can only ever vouch for that role.
  const keys = await resolveRoleKeys(opts.roleKeys, unverifiedRole);
  if (keys.length === 0) return refuse('unknown_role');
  let verifiedPayload: Uint8Array | undefined;
  for (const key of keys) {
    try {
      const result = await compactVerify(token, key, { algorithms: [CONTEXT_TOKEN_ALG] });
      verifiedPayload = result.payload;
      break;
    } catch {
      // Try the role's next key (rotation); the failure itself is reported once, below.
    }
  }
  if (verifiedPayload === undefined) return refuse('bad_signature');
  if (header['typ'] !== CONTEXT_TOKEN_TYPE) return refuse('malformed');

  const claims = parseClaims(verifiedPayload);
  if (claims === undefined || claims.role !== unverifiedRole) return refuse('malformed');

  if (claims.aud !== (opts.audience ?? DEFAULT_CONTEXT_AUDIENCE)) return refuse('wrong_audience');
  // Every comparison with NaN is false: a NaN option (Number() of an unset variable) or clock would switch the
  // lifetime checks off, so anything but a finite, non-negative number refuses.
  const maxTtl = opts.maxTtlSeconds ?? DEFAULT_MAX_TTL_SECONDS;
  const tolerance = opts.clockToleranceSeconds ?? DEFAULT_CLOCK_TOLERANCE_SECONDS;
  const now = Math.floor((opts.now ?? Date.now)() / 1000);
  if (![maxTtl, tolerance, now].every((n) => Number.isFinite(n) && n >= 0)) return refuse('malformed');
  if (claims.exp - claims.iat > maxTtl) return refuse('ttl_too_long');
  if (claims.iat > now + tolerance) return refuse('not_yet_valid');
  if (claims.exp <= now - tolerance) return refuse('expired');

  if (claims.tool !== opts.tool) return refuse('wrong_tool');
  if (claims.args_sha256 !== argsDigest(opts.args)) return refuse('args_mismatch');
  if (!allowlistPermits(opts.allowlist, claims.role, claims.tool)) return refuse('role_not_allowed');
  return { ok: true, claims };
}

function refuse(reason: ContextRefusalReason): ContextVerification {
  return { ok: false, reason };
}

async function resolveRoleKeys(source: RoleKeySource, role: string): Promise<readonly KeyLike[]> {
  const keys = typeof source === 'function' ? await source(role) : source.get(role);
  return Array.isArray(keys) ? keys : [];
}

function allowlistPermits(allowlist: VerifyOptions['allowlist'], role: string, tool: string): boolean {
  // hasOwn: a role named 'constructor' or '__proto__' must not reach Object.prototype.
  if (!Object.hasOwn(allowlist, role)) return false;
  const tools = allowlist[role];
  return Array.isArray(tools) && tools.includes(tool);
}

function parseClaims(payload: Uint8Array): ContextClaims | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload));
  } catch {
    return undefined;
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return undefined;
  const c = raw as Record<string, unknown>;
  const strings = ['iss', 'aud', 'agent', 'role', 'jti', 'tool', 'args_sha256'] as const;
  for (const name of strings) {
    if (typeof c[name] !== 'string' || c[name] === '') return undefined;
  }
  if (c['sub'] !== null && typeof c['sub'] !== 'string') return undefined;
  if (!Number.isSafeInteger(c['iat']) || !Number.isSafeInteger(c['exp'])) return undefined;
  const claims: ContextClaims = {
    iss: c['iss'] as string,
    aud: c['aud'] as string,
    agent: c['agent'] as string,
    role: c['role'] as string,
    sub: c['sub'] as string | null,
    jti: c['jti'] as string,
    tool: c['tool'] as string,
    args_sha256: c['args_sha256'] as string,
    iat: c['iat'] as number,
    exp: c['exp'] as number,
  };
  if (claims.iss !== ISSUER_PREFIX + claims.agent || !SHA256_HEX.test(claims.args_sha256)) return undefined;
  if (claims.exp <= claims.iat) return undefined;
  if ('nbf' in c) return undefined;
  return claims;
}

type FetchLike = (url: string | URL, init?: RequestInit) => Promise<Response>;

/**
 * Wraps fetch so each MCP `tools/call` POST carries a context token minted for exactly that call.
 * A static header cannot do this: the token binds the tool name and a hash of the arguments.
 * Messages other than tools/call pass through without the header.
 */
export function withContextHeader(
  tokenFor: (call: { readonly tool: string; readonly args: unknown }) => string | Promise<string>,
  baseFetch: FetchLike = fetch,
): FetchLike {
  return async (url, init) => {
    const call = typeof init?.body === 'string' ? toolCallOf(init.body) : undefined;
    if (call === undefined) return baseFetch(url, init);
    const headers = new Headers(init?.headers);
    headers.set(CONTEXT_HEADER, await tokenFor(call));
    return baseFetch(url, { ...init, headers });
  };
}

function toolCallOf(body: string): { tool: string; args: unknown } | undefined {
  let message: unknown;
  try {
    message = JSON.parse(body);
  } catch {
    return undefined;
  }
  if (typeof message !== 'object' || message === null) return undefined;
  const m = message as { method?: unknown; params?: { name?: unknown; arguments?: unknown } };
  if (m.method !== 'tools/call' || typeof m.params?.name !== 'string') return undefined;
  return { tool: m.params.name, args: m.params.arguments };
}
