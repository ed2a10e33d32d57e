// The end-user verifier's cache of verified tokens: what a hit returns, when an entry stops counting, and the bound.
// Each case is a script of calls against one fresh verifier with an injected clock; `lookups` counts how often
// jose asked the key set for a key, i.e. how many calls were verified from scratch rather than answered from the cache.
import type { CryptoKey, JWTVerifyGetKey, KeyObject } from 'jose';
import { createLocalJWKSet, errors, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  createEndUserVerifierFromKeySet,
  DEFAULT_VERIFIED_CACHE_MAX_AGE_MS,
  type EndUserVerifierOptions,
  type IdentityConfig,
} from '../../../sidecar/identity/end-user.ts';

const T0 = 1_700_000_000;
const AUDIENCE = 'helpdesk-agents';
const ISSUER = 'https://idp.helpdesk.test';
const CONFIG: IdentityConfig = { required: true, jwks_file: '/unused', audience: AUDIENCE, issuer: ISSUER };

type TokenName = 'user' | 'user2' | 'user3' | 'admin' | 'shortLived' | 'notBefore' | 'forged' | 'numericSub';

let tokens: Record<TokenName, string>;
let jwks: { keys: unknown[] };

beforeAll(async () => {
  const idp = await generateKeyPair('ES256', { extractable: true });
  const forger = await generateKeyPair('ES256');
  jwks = { keys: [{ ...(await exportJWK(idp.publicKey)), kid: 'idp-1', alg: 'ES256' }] };
  const issue = (claims: Record<string, unknown>, key: CryptoKey | KeyObject = idp.privateKey) =>
    new SignJWT({ iat: T0, exp: T0 + 300, ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: 'idp-1' })
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .sign(key);
  tokens = {
    user: await issue({ sub: 'u-1001', role: 'basic-user' }),
    user2: await issue({ sub: 'u-1002', role: 'basic-user' }),
    user3: await issue({ sub: 'u-1003', role: 'basic-user' }),
    admin: await issue({ sub: 'a-1', role: 'admin' }),
    shortLived: await issue({ sub: 'u-1001', role: 'basic-user', exp: T0 + 10 }),
    notBefore: await issue({ sub: 'u-1001', role: 'basic-user', nbf: T0 }),
    forged: await issue({ sub: 'u-1001', role: 'basic-user' }, forger.privateKey),
    numericSub: await issue({ sub: 1001, role: 'basic-user' }),
  };
});

interface Step {
  /** Seconds after T0 (fractions allowed). */
  readonly at: number;
  readonly token: TokenName;
  readonly want: 'ok' | 'misrouted' | 'expired' | 'invalid';
  /** Key lookups so far, this call included. */
  readonly lookups: number;
  /** Take the IdP's key out of the key set before this call. */
  readonly removeKey?: true;
}

interface Case {
  readonly note: string;
  readonly options?: Partial<EndUserVerifierOptions>;
  readonly steps: readonly Step[];
}

const MAX_AGE_S = DEFAULT_VERIFIED_CACHE_MAX_AGE_MS / 1000;

const CASES: Case[] = [
  {
    note: 'a hit answers without a key lookup',
    steps: [
      { at: 0, token: 'user', want: 'ok', lookups: 1 },
      { at: 1, token: 'user', want: 'ok', lookups: 1 },
      { at: 20, token: 'user', want: 'ok', lookups: 1 },
    ],
  },
  {
    note: 'a token that expires after it was cached is refused (exp re-checked on the hit, same 5 s tolerance)',
    steps: [
      { at: 0, token: 'shortLived', want: 'ok', lookups: 1 },
      { at: 14.9, token: 'shortLived', want: 'ok', lookups: 1 },
      { at: 15, token: 'shortLived', want: 'expired', lookups: 2 },
      { at: 16, token: 'shortLived', want: 'expired', lookups: 3 },
    ],
  },
  {
    note: 'an entry older than the max age is verified again',
    steps: [
      { at: 0, token: 'user', want: 'ok', lookups: 1 },
      { at: MAX_AGE_S - 0.001, token: 'user', want: 'ok', lookups: 1 },
      { at: MAX_AGE_S, token: 'user', want: 'ok', lookups: 2 },
      { at: MAX_AGE_S + 1, token: 'user', want: 'ok', lookups: 2 },
    ],
  },
  {
    note: 'a key removed from the key set stops being honoured once the entry is past the max age',
    steps: [
      { at: 0, token: 'user', want: 'ok', lookups: 1 },
      { at: 10, token: 'user', want: 'ok', lookups: 1, removeKey: true },
      { at: MAX_AGE_S, token: 'user', want: 'invalid', lookups: 2 },
    ],
  },
  {
    note: 'a token for another role is still misrouted on a hit',
    steps: [
      { at: 0, token: 'admin', want: 'misrouted', lookups: 1 },
      { at: 1, token: 'admin', want: 'misrouted', lookups: 1 },
      { at: 2, token: 'user', want: 'ok', lookups: 2 },
    ],
  },
  {
    note: 'the clock going back before nbf is checked again, not answered from the cache',
    steps: [
      { at: 0, token: 'notBefore', want: 'ok', lookups: 1 },
      { at: -10, token: 'notBefore', want: 'invalid', lookups: 2 },
      { at: 1, token: 'notBefore', want: 'ok', lookups: 3 },
      { at: 2, token: 'notBefore', want: 'ok', lookups: 3 },
    ],
  },
  {
    note: 'failures are never cached',
    steps: [
      { at: 0, token: 'forged', want: 'invalid', lookups: 1 },
      { at: 1, token: 'forged', want: 'invalid', lookups: 2 },
      { at: 2, token: 'numericSub', want: 'invalid', lookups: 3 },
      { at: 3, token: 'numericSub', want: 'invalid', lookups: 4 },
      { at: 400, token: 'user', want: 'expired', lookups: 5 },
      { at: 401, token: 'user', want: 'expired', lookups: 6 },
    ],
  },
  {
    note: 'the bound is respected: the oldest entry goes first',
    options: { cacheEntries: 2 },
    steps: [
      { at: 0, token: 'user', want: 'ok', lookups: 1 },
      { at: 0, token: 'user2', want: 'ok', lookups: 2 },
      { at: 0, token: 'user3', want: 'ok', lookups: 3 },
      { at: 1, token: 'user3', want: 'ok', lookups: 3 },
      { at: 1, token: 'user2', want: 'ok', lookups: 3 },
      { at: 1, token: 'user', want: 'ok', lookups: 4 },
      { at: 2, token: 'user3', want: 'ok', lookups: 4 },
      { at: 2, token: 'user2', want: 'ok', lookups: 5 },
    ],
  },
  {
    note: 'no cache when it is turned off',
    options: { cacheEntries: 0 },
    steps: [
      { at: 0, token: 'user', want: 'ok', lookups: 1 },
      { at: 1, token: 'user', want: 'ok', lookups: 2 },
    ],
  },
];

describe('end-user verification cache', () => {
  it.each(CASES.map((c) => [c.note, c] as const))('%s', async (_note, c) => {
    let clock = T0 * 1000;
    let lookups = 0;
    let removed = false;
    const local = createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]);
    const keys: JWTVerifyGetKey = (header, token) => {
      lookups++;
      if (removed) throw new errors.JWKSNoMatchingKey();
      return local(header, token);
    };
    const verifier = createEndUserVerifierFromKeySet(CONFIG, keys, {
      agent: 'basic-user',
      now: () => clock,
      ...c.options,
    });
    for (const [i, step] of c.steps.entries()) {
      clock = Math.round((T0 + step.at) * 1000);
      if (step.removeKey) removed = true;
      const v = await verifier.verify(`Bearer ${tokens[step.token]}`);
      expect({ step: i, got: v.ok ? 'ok' : v.reason, lookups }).toEqual({
        step: i,
        got: step.want,
        lookups: step.lookups,
      });
    }
  });

  it('a hit returns the same claims, sub and misrouting detail as the verification did', async () => {
    const clock = T0 * 1000;
    const verifier = createEndUserVerifierFromKeySet(
      CONFIG,
      createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]),
      { agent: 'basic-user', now: () => clock },
    );
    for (const token of ['user', 'admin'] as const) {
      const first = await verifier.verify(`Bearer ${tokens[token]}`);
      const second = await verifier.verify(`Bearer ${tokens[token]}`);
      expect(second).toEqual(first);
    }
    expect(await verifier.verify(`Bearer ${tokens.user}`)).toMatchObject({
      ok: true,
      sub: 'u-1001',
      claims: { sub: 'u-1001', role: 'basic-user', aud: AUDIENCE, iss: ISSUER },
    });
    expect(await verifier.verify(`Bearer ${tokens.admin}`)).toMatchObject({
      ok: false,
      reason: 'misrouted',
      role: 'admin',
      claims: { sub: 'a-1' },
    });
  });

  it('a verifier for another agent does not share what this one remembered', async () => {
    const clock = T0 * 1000;
    const keys = createLocalJWKSet(jwks as Parameters<typeof createLocalJWKSet>[0]);
    const basic = createEndUserVerifierFromKeySet(CONFIG, keys, { agent: 'basic-user', now: () => clock });
    const admin = createEndUserVerifierFromKeySet(CONFIG, keys, { agent: 'admin', now: () => clock });
    expect((await basic.verify(`Bearer ${tokens.user}`)).ok).toBe(true);
    expect(await admin.verify(`Bearer ${tokens.user}`)).toMatchObject({ reason: 'misrouted' });
  });
});
