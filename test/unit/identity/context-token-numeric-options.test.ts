// verifyContextToken is the verifier third-party tool servers call with their own options. A non-finite or negative
// numeric option (NaN from `Number(process.env.X)` when X is unset or mistyped) or clock refuses the token as
// malformed. Found by review, round 5: every comparison with NaN is false, so the lifetime checks were skipped and
// an expired token, or a year-long one minted with a stolen role key, verified.
import { describe, expect, it } from 'vitest';
import { mintContextToken, verifyContextToken } from '../../../sidecar/identity/context-token.ts';
import {
  generateRoleKeyPair,
  importSigningKey,
  importVerificationKeys,
} from '../../../sidecar/identity/keys.ts';

const NOW = 1_700_000_000_000;

async function setup() {
  const pair = await generateRoleKeyPair();
  const signing = await importSigningKey(pair.privateJwk);
  const verifying = await importVerificationKeys(pair.publicJwk);
  const call = {
    agent: 'basic-user',
    role: 'basic-user',
    sub: 'u-1001',
    decisionId: 'dec-1',
    tool: 'submit_ticket',
    args: { subject: 'x' },
  };
  const opts = {
    roleKeys: new Map([['basic-user', verifying]]),
    allowlist: { 'basic-user': ['submit_ticket'] },
    tool: call.tool,
    args: call.args,
  };
  return { signing, call, opts };
}

describe('verifyContextToken with a numeric option that is not a finite, non-negative number', () => {
  it.each([
    {
      name: 'clockToleranceSeconds NaN (an unset variable)',
      bad: { clockToleranceSeconds: Number(undefined) },
    },
    { name: 'clockToleranceSeconds Infinity', bad: { clockToleranceSeconds: Number.POSITIVE_INFINITY } },
    { name: 'clockToleranceSeconds -1', bad: { clockToleranceSeconds: -1 } },
    { name: 'maxTtlSeconds NaN (a duration string)', bad: { maxTtlSeconds: Number('5m') } },
    { name: 'maxTtlSeconds Infinity', bad: { maxTtlSeconds: Number.POSITIVE_INFINITY } },
    { name: 'a clock returning NaN', bad: { now: () => Number.NaN } },
  ])('$name: an expired, year-long token is refused as malformed', async ({ bad }) => {
    const { signing, call, opts } = await setup();
    const token = await mintContextToken(signing, call, { now: () => NOW, ttlSeconds: 365 * 24 * 3600 });
    const later = () => NOW + 400 * 24 * 3_600_000;
    const plain = await verifyContextToken(token, { ...opts, now: later });
    expect(plain.ok ? 'ok' : plain.reason).toBe('ttl_too_long');
    const v = await verifyContextToken(token, { ...opts, now: later, ...bad });
    expect(v.ok ? 'ok' : v.reason).toBe('malformed');
  });

  it('a valid token still verifies with explicit finite options', async () => {
    const { signing, call, opts } = await setup();
    const token = await mintContextToken(signing, call, { now: () => NOW });
    const v = await verifyContextToken(token, {
      ...opts,
      now: () => NOW,
      clockToleranceSeconds: 0,
      maxTtlSeconds: 300,
    });
    expect(v.ok).toBe(true);
  });
});
