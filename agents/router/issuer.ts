// The demo's identity provider: signs short-lived end-user tokens (EdDSA) that the sidecars verify, and checks them.
import { readFile } from 'node:fs/promises';
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  type JWK,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from 'jose';
import type { DemoUser } from './users.ts';
import { isHelpdeskRole } from './users.ts';

/** `iss` of every token; the sidecars' `identity.issuer`. */
export const DEMO_ISSUER = 'helpdesk-router';
/** `aud` of every token; the sidecars' `identity.audience`. */
export const DEMO_AUDIENCE = 'helpdesk';
export const ISSUER_ALG = 'EdDSA';
export const DEFAULT_TOKEN_TTL_SECONDS = 300;

export const ISSUER_PRIVATE_FILE = 'issuer.private.jwk.json';
export const ISSUER_JWKS_FILE = 'jwks.json';

type Key = Awaited<ReturnType<typeof importJWK>>;

export interface IssuedToken {
  readonly token: string;
  readonly expiresAt: Date;
}

export type TokenCheck =
  | { readonly ok: true; readonly sub: string; readonly role: DemoUser['role']; readonly name: string | null }
  | { readonly ok: false; readonly reason: 'invalid' | 'expired' };

export interface Issuer {
  readonly kid: string;
  /** The public JWKS the sidecars are given (no private member). */
  readonly jwks: { readonly keys: readonly JWK[] };
  issue(user: DemoUser): Promise<IssuedToken>;
  check(token: string): Promise<TokenCheck>;
}

export interface IssuerKeyPair {
  readonly privateJwk: JWK;
  readonly jwks: { readonly keys: readonly JWK[] };
}

/** A fresh Ed25519 pair: the private JWK for the router, the public JWKS for the sidecars. */
export async function generateIssuerKeyPair(): Promise<IssuerKeyPair> {
  const { privateKey } = await generateKeyPair(ISSUER_ALG, { crv: 'Ed25519', extractable: true });
  const exported = await exportJWK(privateKey);
  const base: JWK = { kty: 'OKP', crv: 'Ed25519', x: exported.x as string };
  const kid = await calculateJwkThumbprint(base);
  const publicJwk: JWK = { ...base, kid, alg: ISSUER_ALG, use: 'sig' };
  return { privateJwk: { ...publicJwk, d: exported.d as string }, jwks: { keys: [publicJwk] } };
}

export interface IssuerOptions {
  readonly ttlSeconds?: number;
  /** Epoch milliseconds. */
  readonly now?: () => number;
}

export async function createIssuer(privateJwk: JWK, opts: IssuerOptions = {}): Promise<Issuer> {
  if (privateJwk.kty !== 'OKP' || privateJwk.crv !== 'Ed25519' || typeof privateJwk.d !== 'string') {
    throw new Error('the issuer key must be an Ed25519 private JWK');
  }
  const base: JWK = { kty: 'OKP', crv: 'Ed25519', x: privateJwk.x as string };
  const kid = await calculateJwkThumbprint(base);
  const signing: Key = await importJWK({ ...base, d: privateJwk.d }, ISSUER_ALG);
  const verifying: Key = await importJWK(base, ISSUER_ALG);
  const ttl = opts.ttlSeconds ?? DEFAULT_TOKEN_TTL_SECONDS;
  const now = opts.now ?? Date.now;
  return {
    kid,
    jwks: Object.freeze({ keys: Object.freeze([{ ...base, kid, alg: ISSUER_ALG, use: 'sig' }]) }),
    async issue(user) {
      const iat = Math.floor(now() / 1000);
      const token = await new SignJWT({ role: user.role, name: user.name })
        .setProtectedHeader({ alg: ISSUER_ALG, kid, typ: 'JWT' })
        .setIssuer(DEMO_ISSUER)
        .setAudience(DEMO_AUDIENCE)
        .setSubject(user.sub)
        .setIssuedAt(iat)
        .setExpirationTime(iat + ttl)
        .setJti(crypto.randomUUID())
        .sign(signing);
      return { token, expiresAt: new Date((iat + ttl) * 1000) };
    },
    async check(token) {
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, verifying, {
          issuer: DEMO_ISSUER,
          audience: DEMO_AUDIENCE,
          algorithms: [ISSUER_ALG],
          requiredClaims: ['exp', 'sub'],
          currentDate: new Date(now()),
        }));
      } catch (err) {
        return {
          ok: false,
          reason: (err as { code?: string }).code === 'ERR_JWT_EXPIRED' ? 'expired' : 'invalid',
        };
      }
      const role = payload['role'];
      if (typeof payload.sub !== 'string' || !isHelpdeskRole(role)) return { ok: false, reason: 'invalid' };
      const name = payload['name'];
      return { ok: true, sub: payload.sub, role, name: typeof name === 'string' ? name : null };
    },
  };
}

export async function loadIssuer(privateKeyFile: string, opts: IssuerOptions = {}): Promise<Issuer> {
  let jwk: JWK;
  try {
    jwk = JSON.parse(await readFile(privateKeyFile, 'utf8')) as JWK;
  } catch (err) {
    throw new Error(
      `cannot read the issuer key ${privateKeyFile} (${(err as NodeJS.ErrnoException).code ?? 'not JSON'})`,
    );
  }
  return createIssuer(jwk, opts);
}
