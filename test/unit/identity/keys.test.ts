// Role key material: generation, JWK parsing, and the `<role>.public.jwk.json` directory layout.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { calculateJwkThumbprint } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isSidecarError } from '../../../sidecar/errors.ts';
import { mintContextToken, verifyContextToken } from '../../../sidecar/identity/context-token.ts';
import {
  generateRoleKeyPair,
  importSigningKey,
  importVerificationKeys,
  loadPrivateKey,
  loadPublicKeys,
  privateKeyFileName,
  publicKeyFileName,
  roleOfPublicKeyFile,
} from '../../../sidecar/identity/keys.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sidecar-keys-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const writeJson = (path: string, value: unknown) => writeFile(path, JSON.stringify(value));

async function expectConfigError(promise: Promise<unknown>, detail: RegExp): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isSidecarError(err) && err.code).toBe('SIDECAR_ERR_CONFIG_INVALID');
  expect(isSidecarError(err) && err.detail).toMatch(detail);
}

describe('generateRoleKeyPair', () => {
  it('returns an Ed25519 pair whose kid is the public key thumbprint', async () => {
    const { privateJwk, publicJwk, kid } = await generateRoleKeyPair();
    expect(publicJwk).toMatchObject({ kty: 'OKP', crv: 'Ed25519', alg: 'EdDSA', use: 'sig', kid });
    expect(publicJwk).not.toHaveProperty('d');
    expect(privateJwk).toMatchObject({ ...publicJwk, d: expect.any(String) });
    expect(kid).toBe(await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: publicJwk.x as string }));
  });

  it('gives distinct keys each time', async () => {
    const [a, b] = await Promise.all([generateRoleKeyPair(), generateRoleKeyPair()]);
    expect(a.kid).not.toBe(b.kid);
  });
});

describe('importSigningKey / importVerificationKeys', () => {
  it('round-trips through mint and verify', async () => {
    const pair = await generateRoleKeyPair();
    const signing = await importSigningKey(pair.privateJwk);
    expect(signing.kid).toBe(pair.kid);
    const token = await mintContextToken(signing, {
      agent: 'a',
      role: 'admin',
      sub: null,
      decisionId: 'd',
      tool: 't',
      args: {},
    });
    const result = await verifyContextToken(token, {
      roleKeys: new Map([['admin', await importVerificationKeys(pair.publicJwk)]]),
      allowlist: { admin: ['t'] },
      tool: 't',
      args: {},
    });
    expect(result.ok).toBe(true);
  });

  it('accepts a JWKS for rotation', async () => {
    const [a, b] = await Promise.all([generateRoleKeyPair(), generateRoleKeyPair()]);
    expect(await importVerificationKeys({ keys: [a.publicJwk, b.publicJwk] })).toHaveLength(2);
  });

  it.each([
    [
      'a public key where a private one is needed',
      async () => (await generateRoleKeyPair()).publicJwk,
      /not a private key/,
    ],
    ['an RSA key', async () => ({ kty: 'RSA', n: 'x', e: 'AQAB' }), /not an Ed25519/],
    [
      'an X25519 key',
      async () => ({ ...(await generateRoleKeyPair()).privateJwk, crv: 'X25519' }),
      /not an Ed25519/,
    ],
    [
      'a key for another alg',
      async () => ({ ...(await generateRoleKeyPair()).privateJwk, alg: 'ES256' }),
      /alg/,
    ],
    ['an encryption key', async () => ({ ...(await generateRoleKeyPair()).privateJwk, use: 'enc' }), /use/],
    ['a truncated x', async () => ({ ...(await generateRoleKeyPair()).privateJwk, x: 'abc' }), /"x"/],
    [
      'an x that is not the public half of d',
      async () => ({
        ...(await generateRoleKeyPair()).privateJwk,
        x: (await generateRoleKeyPair()).publicJwk.x,
      }),
      /public half/,
    ],
    ['an array', async () => [], /not a JWK/],
  ])('importSigningKey refuses %s', async (_name, jwk, detail) => {
    await expectConfigError(importSigningKey(await jwk()), detail);
  });

  it.each([
    ['private key material', async () => (await generateRoleKeyPair()).privateJwk, /private key material/],
    ['an empty JWKS', async () => ({ keys: [] }), /non-empty/],
    [
      'a JWKS holding a private key',
      async () => ({ keys: [(await generateRoleKeyPair()).privateJwk] }),
      /private/,
    ],
    ['null', async () => null, /not a JWK/],
  ])('importVerificationKeys refuses %s', async (_name, json, detail) => {
    await expectConfigError(importVerificationKeys(await json()), detail);
  });
});

describe('file layout', () => {
  it('names files <role>.public.jwk.json and <role>.private.jwk.json', () => {
    expect(publicKeyFileName('basic-user')).toBe('basic-user.public.jwk.json');
    expect(privateKeyFileName('admin')).toBe('admin.private.jwk.json');
    expect(roleOfPublicKeyFile('support-agent.public.jwk.json')).toBe('support-agent');
    expect(roleOfPublicKeyFile('Admin.public.jwk.json')).toBeUndefined();
    expect(roleOfPublicKeyFile('admin.private.jwk.json')).toBeUndefined();
  });

  it('loads a directory into a role -> keys map, ignoring unrelated files', async () => {
    const [basic, admin, next] = await Promise.all([
      generateRoleKeyPair(),
      generateRoleKeyPair(),
      generateRoleKeyPair(),
    ]);
    await writeJson(join(dir, publicKeyFileName('basic-user')), basic.publicJwk);
    await writeJson(join(dir, publicKeyFileName('admin')), { keys: [admin.publicJwk, next.publicJwk] });
    await writeFile(join(dir, 'README.md'), 'keys');
    const keys = await loadPublicKeys(dir);
    expect([...keys.keys()].sort()).toEqual(['admin', 'basic-user']);
    expect(keys.get('admin')).toHaveLength(2);
  });

  it('loads a single public key file', async () => {
    const pair = await generateRoleKeyPair();
    const file = join(dir, publicKeyFileName('support-agent'));
    await writeJson(file, pair.publicJwk);
    expect([...(await loadPublicKeys(file)).keys()]).toEqual(['support-agent']);
  });

  it('loads a private key file', async () => {
    const pair = await generateRoleKeyPair();
    const file = join(dir, privateKeyFileName('admin'));
    await writeJson(file, pair.privateJwk);
    expect((await loadPrivateKey(file)).kid).toBe(pair.kid);
  });

  it('refuses a private key in the public key directory', async () => {
    const pair = await generateRoleKeyPair();
    await writeJson(join(dir, publicKeyFileName('admin')), pair.publicJwk);
    await writeJson(join(dir, privateKeyFileName('admin')), pair.privateJwk);
    await expectConfigError(loadPublicKeys(dir), /private key in a public key location/);
  });

  it('refuses a public key file that holds private material', async () => {
    const pair = await generateRoleKeyPair();
    await writeJson(join(dir, publicKeyFileName('admin')), pair.privateJwk);
    await expectConfigError(loadPublicKeys(dir), /private key material/);
  });

  it.each([
    ['an empty directory', async () => dir, /no <role>/],
    ['a missing path', async () => join(dir, 'nope'), /cannot be read/],
    [
      'a misnamed key file',
      async () => {
        await writeJson(join(dir, 'Admin.public.jwk.json'), (await generateRoleKeyPair()).publicJwk);
        return dir;
      },
      /expected a name/,
    ],
    [
      'a file that is not JSON',
      async () => {
        await writeFile(join(dir, publicKeyFileName('admin')), '{');
        return dir;
      },
      /not JSON/,
    ],
    [
      'a subdirectory named like a key file',
      async () => {
        await mkdir(join(dir, publicKeyFileName('admin')));
        return dir;
      },
      /cannot be read/,
    ],
  ])('refuses %s', async (_name, setup, detail) => {
    await expectConfigError(loadPublicKeys(await setup()), detail);
  });
});
