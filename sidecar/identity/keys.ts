// Per-role Ed25519 key material for context tokens: generation, JWK parsing, and the on-disk layout.
// Layout: one directory, one file per role: `<role>.private.jwk.json` (only in that role's sidecar) and
// `<role>.public.jwk.json` (given to tool servers). A public file holds one JWK, or `{"keys":[...]}` during rotation.
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { JWK } from 'jose';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK } from 'jose';
import { SidecarError } from '../errors.ts';
import type { KeyLike, SigningKey } from './context-token.ts';
import { CONTEXT_TOKEN_ALG } from './context-token.ts';

export const PUBLIC_KEY_SUFFIX = '.public.jwk.json';
export const PRIVATE_KEY_SUFFIX = '.private.jwk.json';
/** Role names double as file names: lower-case letters, digits, '-' and '_'. */
const ROLE_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;
const ED25519_COORDINATE = /^[A-Za-z0-9_-]{43}$/;

export interface RoleKeyPair {
  /** Contains `d`: stays in the role's own sidecar. */
  readonly privateJwk: JWK;
  readonly publicJwk: JWK;
  readonly kid: string;
}

export function isValidRoleName(role: string): boolean {
  return ROLE_NAME.test(role);
}

export function publicKeyFileName(role: string): string {
  return role + PUBLIC_KEY_SUFFIX;
}

export function privateKeyFileName(role: string): string {
  return role + PRIVATE_KEY_SUFFIX;
}

/** A fresh Ed25519 pair as JWKs, with `kid` = RFC 7638 thumbprint of the public key. */
export async function generateRoleKeyPair(): Promise<RoleKeyPair> {
  const { privateKey } = await generateKeyPair(CONTEXT_TOKEN_ALG, { crv: 'Ed25519', extractable: true });
  const exported = await exportJWK(privateKey);
  const publicJwk = await publicJwkOf({ kty: 'OKP', crv: 'Ed25519', x: exported.x as string });
  const privateJwk: JWK = { ...publicJwk, d: exported.d as string };
  return { privateJwk, publicJwk, kid: publicJwk.kid as string };
}

/**
 * Parses a private JWK (already read from wherever) into a signing key. No I/O.
 * The key is a node:crypto KeyObject, not a WebCrypto CryptoKey, so that a sidecar can sign each call inline
 * (mintContextTokenSync) instead of through WebCrypto's thread pool.
 */
export async function importSigningKey(json: unknown, source = 'private key'): Promise<SigningKey> {
  const jwk = checkEd25519Jwk(json, source);
  if (typeof jwk['d'] !== 'string' || !ED25519_COORDINATE.test(jwk['d'])) {
    throw invalid(`${source}: not a private key (no valid "d")`);
  }
  const x = jwk['x'] as string;
  const { kid } = await publicJwkOf({ kty: 'OKP', crv: 'Ed25519', x });
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', x, d: jwk['d'] }, format: 'jwk' });
  } catch (err) {
    throw invalid(`${source}: key does not import`, err);
  }
  // node:crypto derives the key from "d" alone; the kid (and what tool servers trust) comes from "x". WebCrypto
  // refuses a mismatched pair on import, and so does this.
  if (createPublicKey(privateKey).export({ format: 'jwk' }).x !== x) {
    throw invalid(`${source}: key does not import ("x" is not the public half of "d")`);
  }
  return { privateKey, kid: kid as string };
}

/** Parses a public key file's JSON (one JWK or a JWKS) into verification keys. No I/O. */
export async function importVerificationKeys(json: unknown, source = 'public key'): Promise<KeyLike[]> {
  const list =
    typeof json === 'object' && json !== null && 'keys' in json ? (json as { keys: unknown }).keys : [json];
  if (!Array.isArray(list) || list.length === 0) throw invalid(`${source}: "keys" must be a non-empty array`);
  const keys: KeyLike[] = [];
  for (const [i, entry] of list.entries()) {
    const where = list.length > 1 ? `${source} [${i}]` : source;
    const jwk = checkEd25519Jwk(entry, where);
    // A tool server that can read a private key can mint context: refuse instead of quietly ignoring `d`.
    if ('d' in jwk) throw invalid(`${where}: contains private key material`);
    try {
      keys.push(
        (await importJWK(
          { kty: 'OKP', crv: 'Ed25519', x: jwk['x'] as string },
          CONTEXT_TOKEN_ALG,
        )) as KeyLike,
      );
    } catch (err) {
      throw invalid(`${where}: key does not import`, err);
    }
  }
  return keys;
}

/** The role a public key file belongs to, from its name; undefined when the name does not follow the layout. */
export function roleOfPublicKeyFile(fileName: string): string | undefined {
  if (!fileName.endsWith(PUBLIC_KEY_SUFFIX)) return undefined;
  const role = fileName.slice(0, -PUBLIC_KEY_SUFFIX.length);
  return isValidRoleName(role) ? role : undefined;
}

/** Reads a role's private JWK file. Called once at startup. */
export async function loadPrivateKey(path: string): Promise<SigningKey> {
  return importSigningKey(await readJson(path), path);
}

/**
 * Reads the public keys a tool server trusts: a directory of `<role>.public.jwk.json` files, or one such file.
 * Called once at startup; a private key file in the directory is an error, not something to skip.
 */
export async function loadPublicKeys(dirOrFile: string): Promise<Map<string, KeyLike[]>> {
  let files: string[];
  try {
    files = (await stat(dirOrFile)).isDirectory()
      ? (await readdir(dirOrFile)).sort().map((name) => join(dirOrFile, name))
      : [dirOrFile];
  } catch (err) {
    throw invalid(`${dirOrFile}: cannot be read`, err);
  }
  const roleKeys = new Map<string, KeyLike[]>();
  for (const file of files) {
    const name = basename(file);
    if (name.endsWith(PRIVATE_KEY_SUFFIX)) throw invalid(`${file}: private key in a public key location`);
    const role = roleOfPublicKeyFile(name);
    if (role === undefined) {
      if (files.length === 1 || name.endsWith('.jwk.json')) {
        throw invalid(`${file}: expected a name of the form <role>${PUBLIC_KEY_SUFFIX}`);
      }
      continue;
    }
    roleKeys.set(role, await importVerificationKeys(await readJson(file), file));
  }
  if (roleKeys.size === 0) throw invalid(`${dirOrFile}: no <role>${PUBLIC_KEY_SUFFIX} files`);
  return roleKeys;
}

async function publicJwkOf(bare: { kty: 'OKP'; crv: 'Ed25519'; x: string }): Promise<JWK> {
  const kid = await calculateJwkThumbprint(bare);
  return { ...bare, kid, alg: CONTEXT_TOKEN_ALG, use: 'sig' };
}

function checkEd25519Jwk(json: unknown, source: string): Record<string, unknown> {
  if (typeof json !== 'object' || json === null || Array.isArray(json))
    throw invalid(`${source}: not a JWK object`);
  const jwk = json as Record<string, unknown>;
  if (jwk['kty'] !== 'OKP' || jwk['crv'] !== 'Ed25519') throw invalid(`${source}: not an Ed25519 (OKP) key`);
  if (typeof jwk['x'] !== 'string' || !ED25519_COORDINATE.test(jwk['x']))
    throw invalid(`${source}: invalid "x"`);
  if (jwk['alg'] !== undefined && jwk['alg'] !== CONTEXT_TOKEN_ALG)
    throw invalid(`${source}: "alg" must be EdDSA`);
  if (jwk['use'] !== undefined && jwk['use'] !== 'sig') throw invalid(`${source}: "use" must be sig`);
  return jwk;
}

async function readJson(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw invalid(`${path}: cannot be read`, err);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw invalid(`${path}: not JSON`, err);
  }
}

function invalid(detail: string, cause?: unknown): SidecarError {
  return new SidecarError('SIDECAR_ERR_CONFIG_INVALID', detail, cause === undefined ? undefined : { cause });
}
