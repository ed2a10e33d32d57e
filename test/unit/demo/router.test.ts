// The demo router's pure parts: the injected routing bug's parser, the route choice, and its token issuer.
import { decodeProtectedHeader, importJWK, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import {
  createIssuer,
  DEMO_AUDIENCE,
  DEMO_ISSUER,
  generateIssuerKeyPair,
} from '../../../agents/router/issuer.ts';
import { defaultAgentDirectory, parseMisroutes, routeFor } from '../../../agents/router/routing.ts';
import { DEMO_USERS, findDemoUser } from '../../../agents/router/users.ts';

describe('ROUTER_MISROUTE', () => {
  it.each([
    [undefined, {}],
    ['', {}],
    ['  ', {}],
    ['basic-user:admin', { 'basic-user': 'admin' }],
    [
      ' basic-user:admin , support-agent:basic-user ',
      { 'basic-user': 'admin', 'support-agent': 'basic-user' },
    ],
    ['admin:admin', {}],
  ])('%j parses to %j', (value, want) => {
    expect(Object.fromEntries(parseMisroutes(value))).toEqual(want);
  });

  it.each([
    'basic-user',
    'basic-user:',
    'basic-user:root',
    'guest:admin',
    'a:b:c',
    'basic-user:admin,basic-user:support-agent',
  ])('%j is refused, so a typo never silently turns the bug off', (value) => {
    expect(() => parseMisroutes(value)).toThrow(/ROUTER_MISROUTE/);
  });

  it('routes by the token role, unless the bug redirects that role', () => {
    const agents = defaultAgentDirectory();
    expect(agents['admin']).toBe('http://admin-sidecar:8088');
    const bug = parseMisroutes('basic-user:admin');
    expect(routeFor('basic-user', agents, new Map())).toEqual({
      role: 'basic-user',
      url: 'http://basic-user-sidecar:8088',
      misrouted: false,
    });
    expect(routeFor('basic-user', agents, bug)).toEqual({
      role: 'admin',
      url: 'http://admin-sidecar:8088',
      misrouted: true,
    });
    expect(routeFor('support-agent', agents, bug).misrouted).toBe(false);
  });
});

describe('the demo issuer', () => {
  const ada = findDemoUser('ada')!;

  it('demo users: customers are the seeded helpdesk users, admins are protected by the admin- prefix', () => {
    expect(ada).toMatchObject({ sub: 'u-1001', role: 'basic-user' });
    expect(DEMO_USERS.filter((u) => u.role === 'admin').every((u) => u.sub.startsWith('admin-'))).toBe(true);
    expect(findDemoUser('nobody')).toBeUndefined();
  });

  it('signs EdDSA tokens the sidecars can verify with the public JWKS alone', async () => {
    const pair = await generateIssuerKeyPair();
    expect(pair.jwks.keys[0]).not.toHaveProperty('d');
    const issuer = await createIssuer(pair.privateJwk);
    const { token } = await issuer.issue(ada);
    expect(decodeProtectedHeader(token)).toMatchObject({ alg: 'EdDSA', kid: issuer.kid, typ: 'JWT' });
    const key = await importJWK(pair.jwks.keys[0]!, 'EdDSA');
    const { payload } = await jwtVerify(token, key, { issuer: DEMO_ISSUER, audience: DEMO_AUDIENCE });
    expect(payload).toMatchObject({ sub: 'u-1001', role: 'basic-user', name: 'Ada Lovelace' });
    expect(payload.exp! - payload.iat!).toBe(300);
  });

  it('refuses its own expired tokens, and tokens of another key', async () => {
    let now = Date.now();
    const issuer = await createIssuer((await generateIssuerKeyPair()).privateJwk, {
      now: () => now,
      ttlSeconds: 60,
    });
    const { token } = await issuer.issue(ada);
    expect(await issuer.check(token)).toMatchObject({ ok: true, sub: 'u-1001', role: 'basic-user' });
    now += 61_000;
    expect(await issuer.check(token)).toEqual({ ok: false, reason: 'expired' });
    const other = await createIssuer((await generateIssuerKeyPair()).privateJwk);
    expect(await issuer.check((await other.issue(ada)).token)).toEqual({ ok: false, reason: 'invalid' });
    expect(await issuer.check('not.a.jwt')).toEqual({ ok: false, reason: 'invalid' });
  });

  it('refuses a key that is not an Ed25519 private JWK', async () => {
    const { jwks } = await generateIssuerKeyPair();
    await expect(createIssuer(jwks.keys[0]!)).rejects.toThrow(/Ed25519 private JWK/);
  });
});
