// With `jwks_url`, a key the IdP removes from its key set (rotated out, compromised) stops verifying within a
// minute (docs/identity.md): the key set is refetched once it is 30 s old. jose refetches early only for an unknown
// kid, so with its old ten-minute cache a new token signed with the removed key (known kid) kept verifying.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createEndUserVerifier } from '../../../sidecar/identity/end-user.ts';

const AUDIENCE = 'helpdesk-agents';
let server: Server;
let served: { keys: unknown[] };
let url: string;

beforeAll(async () => {
  server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(served));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
});
afterEach(() => {
  vi.useRealTimers();
});

describe('JWKS URL: a key the IdP removed', () => {
  it('stops being honoured within a minute (docs/identity.md)', async () => {
    vi.useFakeTimers({ toFake: ['Date'], now: Date.now() });
    const compromised = await generateKeyPair('ES256', { extractable: true });
    const next = await generateKeyPair('ES256', { extractable: true });
    const jwk = async (k: Parameters<typeof exportJWK>[0], kid: string) => ({
      ...(await exportJWK(k)),
      kid,
      alg: 'ES256',
    });
    served = { keys: [await jwk(compromised.publicKey, 'k-old')] };
    const issue = (sub: string) =>
      new SignJWT({ sub, role: 'basic-user' })
        .setProtectedHeader({ alg: 'ES256', kid: 'k-old' })
        .setAudience(AUDIENCE)
        .setExpirationTime('1h')
        .sign(compromised.privateKey);

    const v = await createEndUserVerifier(
      { required: true, jwks_url: url, audience: AUDIENCE, insecure_loopback_jwks_url: true },
      { agent: 'basic-user' },
    );
    expect((await v.verify(`Bearer ${await issue('u-1')}`)).ok).toBe(true);

    // The IdP rotates the compromised key out.
    served = { keys: [await jwk(next.publicKey, 'k-new')] };
    vi.setSystemTime(Date.now() + 60_000);

    // A fresh token (never cached) signed with the removed key, a minute after the removal.
    const v2 = await v.verify(`Bearer ${await issue('u-2')}`);
    expect(v2.ok ? 'accepted' : v2.reason).toBe('invalid');
  });
});
