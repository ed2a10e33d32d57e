// End-user identity: verifies the JWT an agent passes for the person it acts for, and that it belongs at this sidecar.
import { readFile } from 'node:fs/promises';
import type { JSONWebKeySet, JWTPayload, JWTVerifyGetKey } from 'jose';
import { createLocalJWKSet, createRemoteJWKSet, errors, jwtVerify } from 'jose';
import { z } from 'zod';
import { SidecarError } from '../errors.ts';

/** Asymmetric algorithms only: a JWKS holds public keys, and an HMAC "key" taken from one would be public. */
export const END_USER_ALGORITHMS = [
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
  'Ed25519',
] as const;
export const DEFAULT_ROLE_CLAIM = 'role';
export const DEFAULT_END_USER_CLOCK_TOLERANCE_SECONDS = 5;
/** Bearer tokens far larger than any real ID or access token are refused before any parsing. */
const MAX_TOKEN_LENGTH = 16 * 1024;
/**
 * Verified tokens are remembered briefly, as Envoy's jwt_authn does (jwt_cache_config): an agent sends its user's
 * token with every call, and a signature check costs a WebCrypto thread-pool round trip. Only tokens whose
 * signature and claims verified are kept, keyed by the exact token; an entry is used only while a fresh check
 * would still accept it (exp/nbf re-checked on every hit, same tolerance) and for at most MAX_AGE, so a key
 * dropped from the JWKS stops being honoured within that time. Bounded in count: the oldest entry goes first.
 */
export const DEFAULT_VERIFIED_CACHE_ENTRIES = 1024;
export const DEFAULT_VERIFIED_CACHE_MAX_AGE_MS = 30_000;
/** How old a `jwks_url` key set may get before the next verification refetches it. */
export const JWKS_CACHE_MAX_AGE_MS = 30_000;
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

const jwksUrl = z
  .string()
  .url()
  .refine((v) => {
    const u = new URL(v);
    return u.protocol === 'https:' || (u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname));
  }, 'must be an https URL: keys fetched in clear text can be swapped');

/** A loopback `http:` key set: whoever listens on that port (the agent shares the sidecar's loopback) serves it. */
function isPlainHttp(url: string | undefined): boolean {
  return url !== undefined && new URL(url).protocol === 'http:';
}

export const identityConfigSchema = z
  .strictObject({
    /** Every tools/call must carry a valid end-user token. When false, a call without one runs without claims. */
    required: z.boolean(),
    /** A JWKS file (public keys only); relative: to the config file's directory. */
    jwks_file: z.string().min(1).optional(),
    jwks_url: jwksUrl.optional(),
    issuer: z.string().min(1).optional(),
    audience: z.string().min(1),
    /** The claim naming the user's role; default `role`. */
    role_claim: z.string().min(1).optional(),
    /** Role claim value -> agent. Without it the claim must equal the policy's agent. */
    role_map: z.record(z.string().min(1), z.string().min(1)).optional(),
    clock_tolerance_seconds: z.number().int().min(0).max(300).optional(),
    /**
     * Allows a `jwks_url` of plain http on loopback, for development and tests only. The agent shares the sidecar's
     * network namespace, so any loopback port may be the agent's: a key set served there lets it mint any user.
     */
    insecure_loopback_jwks_url: z.boolean().optional(),
  })
  .refine((c) => (c.jwks_file === undefined) !== (c.jwks_url === undefined), {
    message: 'give exactly one of jwks_file or jwks_url',
  })
  .refine((c) => !isPlainHttp(c.jwks_url) || c.insecure_loopback_jwks_url === true, {
    message:
      'jwks_url must be https: the agent shares the sidecar loopback and could serve its own keys on a plain http port (insecure_loopback_jwks_url: true allows it for development only)',
    path: ['jwks_url'],
  });

export type IdentityConfig = z.infer<typeof identityConfigSchema>;

export type EndUserProblem = 'missing' | 'invalid' | 'expired' | 'wrong_audience' | 'misrouted';

export type EndUserVerification =
  | { readonly ok: true; readonly claims: Readonly<Record<string, unknown>>; readonly sub: string }
  | {
      readonly ok: false;
      readonly reason: EndUserProblem;
      /** Verified claims, only for `misrouted`: the token is genuine but belongs to another role's sidecar. */
      readonly claims?: Readonly<Record<string, unknown>>;
      /** For `misrouted`: the token's role claim as it was (the audit records both identities). */
      readonly role?: unknown;
    };

export interface EndUserVerifier {
  /** The agent (policy) this sidecar serves: a token's mapped role must equal it. */
  readonly agent: string;
  readonly required: boolean;
  /** Never throws: every failure is a reason. */
  verify(authorization: string | undefined): Promise<EndUserVerification>;
}

export interface EndUserVerifierOptions {
  readonly agent: string;
  /** Clock in milliseconds since the epoch (tests). */
  readonly now?: () => number;
  /** How many verified tokens are remembered; 0 turns the cache off. Default 1024. */
  readonly cacheEntries?: number;
  /** How long a verified token is remembered at most, whatever its exp. Default 30 s. */
  readonly cacheMaxAgeMs?: number;
  /** Receives the detail of refusals the agent only sees as a reason (key fetch failures, bad signatures). */
  readonly onProblem?: (reason: EndUserProblem, detail: string) => void;
}

/** Reads the key set (file) or prepares its fetcher (URL). A bad file is SIDECAR_ERR_CONFIG_INVALID. */
export async function createEndUserVerifier(
  input: IdentityConfig,
  opts: EndUserVerifierOptions,
): Promise<EndUserVerifier> {
  const config = parseIdentityConfig(input);
  const keys =
    config.jwks_file !== undefined
      ? createLocalJWKSet(await readJwksFile(config.jwks_file))
      : createRemoteJWKSet(new URL(config.jwks_url as string), {
          timeoutDuration: 5_000,
          cooldownDuration: 30_000,
          // A key the IdP drops (rotated out, compromised) must stop verifying soon, not after ten minutes: the set
          // is refetched once it is 30 s old, and a failed refetch fails closed.
          cacheMaxAge: JWKS_CACHE_MAX_AGE_MS,
        });
  return new JwtEndUserVerifier(config, keys, opts);
}

/**
 * A verifier over a key set the caller already holds (a jose JWKS function), for embedding and tests: the
 * config's jwks_file/jwks_url are validated but not used.
 */
export function createEndUserVerifierFromKeySet(
  input: IdentityConfig,
  keys: JWTVerifyGetKey,
  opts: EndUserVerifierOptions,
): EndUserVerifier {
  return new JwtEndUserVerifier(parseIdentityConfig(input), keys, opts);
}

function parseIdentityConfig(input: IdentityConfig): IdentityConfig {
  const parsed = identityConfigSchema.safeParse(input);
  if (!parsed.success) {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      parsed.error.issues.map((i) => `identity.${i.path.join('.')}: ${i.message}`).join('\n'),
    );
  }
  return parsed.data;
}

/** Claims whose signature, issuer, audience, lifetime and `sub` were accepted, and when. */
interface VerifiedToken {
  readonly claims: Readonly<Record<string, unknown>>;
  readonly exp: number;
  readonly nbf: number | undefined;
  readonly verifiedAt: number;
}

class JwtEndUserVerifier implements EndUserVerifier {
  readonly agent: string;
  readonly required: boolean;
  readonly #config: IdentityConfig;
  readonly #keys: JWTVerifyGetKey;
  readonly #opts: EndUserVerifierOptions;
  readonly #roleClaim: string;
  readonly #clockTolerance: number;
  readonly #cacheEntries: number;
  readonly #cacheMaxAgeMs: number;
  readonly #verified = new Map<string, VerifiedToken>();

  constructor(config: IdentityConfig, keys: JWTVerifyGetKey, opts: EndUserVerifierOptions) {
    this.agent = opts.agent;
    this.required = config.required;
    this.#config = config;
    this.#keys = keys;
    this.#opts = opts;
    this.#roleClaim = config.role_claim ?? DEFAULT_ROLE_CLAIM;
    this.#clockTolerance = config.clock_tolerance_seconds ?? DEFAULT_END_USER_CLOCK_TOLERANCE_SECONDS;
    this.#cacheEntries = opts.cacheEntries ?? DEFAULT_VERIFIED_CACHE_ENTRIES;
    this.#cacheMaxAgeMs = opts.cacheMaxAgeMs ?? DEFAULT_VERIFIED_CACHE_MAX_AGE_MS;
  }

  async verify(authorization: string | undefined): Promise<EndUserVerification> {
    if (authorization === undefined || authorization.trim() === '') return { ok: false, reason: 'missing' };
    const m = /^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+) *$/i.exec(authorization);
    const token = m?.[1];
    if (token === undefined || token.length > MAX_TOKEN_LENGTH)
      return this.#problem('invalid', 'not a Bearer JWT');
    const now = (this.#opts.now ?? Date.now)();
    let claims = this.#cached(token, now);
    if (claims === undefined) {
      const fresh = await this.#verifyToken(token, now);
      if (!('verifiedAt' in fresh)) return fresh;
      this.#remember(token, fresh);
      claims = fresh.claims;
    }
    // The role check runs on every call, cached or not: a misrouted token is never remembered as anything else.
    if (this.#mappedRole(claims) !== this.agent) {
      const role = Object.hasOwn(claims, this.#roleClaim) ? claims[this.#roleClaim] : null;
      return { ok: false, reason: 'misrouted', claims, role };
    }
    return { ok: true, claims, sub: claims['sub'] as string };
  }

  /** A remembered verification, if a fresh one would still give the same answer now. */
  #cached(token: string, now: number): Readonly<Record<string, unknown>> | undefined {
    const hit = this.#verified.get(token);
    if (hit === undefined) return undefined;
    // jose's own clock checks, with the same tolerance and whole seconds: a hit never accepts what jose would not.
    const seconds = Math.floor(now / 1000);
    if (
      now - hit.verifiedAt < this.#cacheMaxAgeMs &&
      now >= hit.verifiedAt &&
      hit.exp > seconds - this.#clockTolerance &&
      (hit.nbf === undefined || hit.nbf <= seconds + this.#clockTolerance)
    ) {
      return hit.claims;
    }
    // Stale, or the clock moved back: verified again from scratch, and that answer (expired, ...) is the one given.
    this.#verified.delete(token);
    return undefined;
  }

  async #verifyToken(token: string, now: number): Promise<VerifiedToken | EndUserVerification> {
    let payload: JWTPayload;
    try {
      const result = await jwtVerify(token, this.#keys, {
        algorithms: [...END_USER_ALGORITHMS],
        audience: this.#config.audience,
        ...(this.#config.issuer === undefined ? {} : { issuer: this.#config.issuer }),
        clockTolerance: this.#clockTolerance,
        requiredClaims: ['exp', 'sub'],
        currentDate: new Date(now),
      });
      payload = result.payload;
    } catch (err) {
      // jose checks the signature before any claim, so `expired` and `wrong_audience` are genuine tokens.
      if (err instanceof errors.JWTExpired) return this.#problem('expired', err.message);
      if (err instanceof errors.JWTClaimValidationFailed && err.claim === 'aud') {
        return this.#problem('wrong_audience', err.message);
      }
      return this.#problem('invalid', err instanceof Error ? `${err.name}: ${err.message}` : 'unverifiable');
    }
    const claims = Object.freeze({ ...payload }) as Readonly<Record<string, unknown>>;
    const sub = claims['sub'];
    if (typeof sub !== 'string' || sub === '')
      return this.#problem('invalid', '`sub` must be a non-empty string');
    // requiredClaims makes jose check that exp is a number; nbf, when present, is one too.
    return { claims, exp: payload.exp as number, nbf: payload.nbf, verifiedAt: now };
  }

  #remember(token: string, verified: VerifiedToken): void {
    if (this.#cacheEntries <= 0 || this.#cacheMaxAgeMs <= 0) return;
    this.#verified.delete(token);
    while (this.#verified.size >= this.#cacheEntries) {
      const oldest = this.#verified.keys().next().value;
      if (oldest === undefined) break;
      this.#verified.delete(oldest);
    }
    this.#verified.set(token, verified);
  }

  #mappedRole(claims: Readonly<Record<string, unknown>>): string | undefined {
    const value = Object.hasOwn(claims, this.#roleClaim) ? claims[this.#roleClaim] : undefined;
    if (typeof value !== 'string') return undefined;
    const map = this.#config.role_map;
    if (map === undefined) return value;
    // hasOwn: a claim of "__proto__" or "constructor" must not reach Object.prototype.
    return Object.hasOwn(map, value) ? map[value] : undefined;
  }

  #problem(reason: EndUserProblem, detail: string): EndUserVerification {
    this.#opts.onProblem?.(reason, detail);
    return { ok: false, reason };
  }
}

async function readJwksFile(path: string): Promise<JSONWebKeySet> {
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (err) {
    throw new SidecarError('SIDECAR_ERR_CONFIG_INVALID', `${path}: cannot be read as JSON`, { cause: err });
  }
  const keys = (json as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys) || keys.length === 0) {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `${path}: expected a JWKS with a non-empty "keys" array`,
    );
  }
  for (const [i, key] of keys.entries()) {
    if (typeof key !== 'object' || key === null) {
      throw new SidecarError('SIDECAR_ERR_CONFIG_INVALID', `${path}: keys[${i}] is not a JWK`);
    }
    // Private or symmetric material does not belong in a verifier's key set.
    for (const secret of ['d', 'k', 'p', 'q']) {
      if (secret in key) {
        throw new SidecarError(
          'SIDECAR_ERR_CONFIG_INVALID',
          `${path}: keys[${i}] contains private key material`,
        );
      }
    }
  }
  return json as JSONWebKeySet;
}
