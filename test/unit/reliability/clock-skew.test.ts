// Clocks that disagree: a context token minted on a skewed sidecar clock and checked on the tool server's clock,
// across the whole skew range (milliseconds, so the truncation to whole seconds is exercised too); keys retired by
// rotation; end-user tokens (JWTs from an IdP) the same way, with the verifier's cache; and the audit chain written
// while the wall clock steps backwards. test/unit/identity covers the named boundary cases; this sweeps between them.
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { AuditChain } from '../../../sidecar/audit/chain.ts';
import {
  type CallContext,
  type KeyLike,
  mintContextToken,
  type SigningKey,
  type VerifyOptions,
  verifyContextToken,
} from '../../../sidecar/identity/context-token.ts';
import { createEndUserVerifier } from '../../../sidecar/identity/end-user.ts';
import {
  generateRoleKeyPair,
  importSigningKey,
  importVerificationKeys,
} from '../../../sidecar/identity/keys.ts';
import { tempDir, verifyChain } from './harness.ts';

const RUNS = { numRuns: Number(process.env['FUZZ_RUNS'] ?? 300) };
const T0 = 1_750_000_000_000;
const CALL: CallContext = {
  agent: 'helpdesk-basic',
  role: 'basic-user',
  sub: 'u-1',
  decisionId: 'd-1',
  tool: 'submit_ticket',
  args: { subject: 'x' },
};

interface Pair {
  signing: SigningKey;
  verifying: KeyLike[];
}
async function pair(): Promise<Pair> {
  const p = await generateRoleKeyPair();
  return {
    signing: await importSigningKey(p.privateJwk),
    verifying: await importVerificationKeys(p.publicJwk),
  };
}
let current: Pair;
let retired: Pair;
beforeAll(async () => {
  [current, retired] = await Promise.all([pair(), pair()]);
});

const opts = (verifierNow: number, over: Partial<VerifyOptions> = {}): VerifyOptions => ({
  roleKeys: new Map([['basic-user', current.verifying]]),
  allowlist: { 'basic-user': ['submit_ticket'] },
  tool: CALL.tool,
  args: CALL.args,
  now: () => verifierNow,
  ...over,
});

describe('context tokens across clock skew', () => {
  // skewMs: how far the minting sidecar's clock is ahead of the verifier's; ageMs: how long the token travelled.
  const case_ = fc.record({
    skewMs: fc.integer({ min: -400_000, max: 400_000 }),
    ageMs: fc.integer({ min: 0, max: 400_000 }),
    ttl: fc.integer({ min: 1, max: 300 }),
    tolerance: fc.integer({ min: 0, max: 30 }),
  });

  it('accepted well inside the window, refused as expired / not_yet_valid well outside it, never anything else', async () => {
    await fc.assert(
      fc.asyncProperty(case_, async ({ skewMs, ageMs, ttl, tolerance }) => {
        const token = await mintContextToken(current.signing, CALL, {
          ttlSeconds: ttl,
          now: () => T0 + skewMs,
        });
        const verifierNow = T0 + ageMs;
        const r = await verifyContextToken(token, opts(verifierNow, { clockToleranceSeconds: tolerance }));
        // Where the token stands on the verifier's clock, in ms; whole-second truncation blurs each edge by 1 s.
        const issuedAhead = skewMs - ageMs; // > 0: issued "in the future"
        const expiredBy = ageMs - skewMs - ttl * 1000; // > 0: past exp
        const margin = 1000;
        if (issuedAhead <= tolerance * 1000 - margin && expiredBy < tolerance * 1000 - margin) {
          expect(r).toMatchObject({ ok: true });
        }
        if (issuedAhead > tolerance * 1000 + margin)
          expect(r).toEqual({ ok: false, reason: 'not_yet_valid' });
        else if (expiredBy >= tolerance * 1000 + margin) expect(r).toEqual({ ok: false, reason: 'expired' });
        if (!r.ok) expect(['expired', 'not_yet_valid']).toContain(r.reason);
      }),
      RUNS,
    );
  });

  it('a TTL longer than the verifier allows is refused at every skew', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: -100_000, max: 100_000 }),
        fc.integer({ min: 301, max: 100_000 }),
        async (skewMs, ttl) => {
          const token = await mintContextToken(current.signing, CALL, {
            ttlSeconds: ttl,
            now: () => T0 + skewMs,
          });
          expect(await verifyContextToken(token, opts(T0))).toEqual({ ok: false, reason: 'ttl_too_long' });
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('end-user tokens across clock skew (sidecar/identity/end-user.ts)', () => {
  it('accepted inside the tolerance window, expired or not-yet-valid outside it; a cached answer never outlives exp', async () => {
    const dir = await tempDir('idp');
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const jwks = join(dir, 'idp.jwks.json');
    await writeFile(
      jwks,
      JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] }),
    );
    const issue = (iat: number, ttl: number) =>
      new SignJWT({ sub: 'u-1', role: 'basic-user' })
        .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
        .setIssuedAt(iat)
        .setNotBefore(iat)
        .setExpirationTime(iat + ttl)
        .setAudience('agents')
        .sign(privateKey);
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: -400_000, max: 400_000 }),
          fc.integer({ min: 0, max: 400_000 }),
          fc.integer({ min: 1, max: 300 }),
          fc.integer({ min: 0, max: 30 }),
          async (skewMs, ageMs, ttl, tolerance) => {
            let clock = T0 + ageMs;
            // A fresh verifier per case: its cache of verified tokens must not carry over between cases.
            const verifier = await createEndUserVerifier(
              { required: true, jwks_file: jwks, audience: 'agents', clock_tolerance_seconds: tolerance },
              { agent: 'basic-user', now: () => clock },
            );
            const token = await issue(Math.floor((T0 + skewMs) / 1000), ttl);
            const r = await verifier.verify(`Bearer ${token}`);
            const issuedAhead = skewMs - ageMs;
            const expiredBy = ageMs - skewMs - ttl * 1000;
            const margin = 1000;
            if (issuedAhead <= tolerance * 1000 - margin && expiredBy < tolerance * 1000 - margin) {
              expect(r).toMatchObject({ ok: true, sub: 'u-1' });
            }
            if (issuedAhead > tolerance * 1000 + margin)
              expect(r).toMatchObject({ ok: false, reason: 'invalid' });
            else if (expiredBy >= tolerance * 1000 + margin)
              expect(r).toMatchObject({ ok: false, reason: 'expired' });
            if (!r.ok) expect(['invalid', 'expired']).toContain(r.reason);
            // The same token once the verifier's clock has passed exp + tolerance: expired, cached or not.
            if (r.ok) {
              clock = (Math.floor((T0 + skewMs) / 1000) + ttl + tolerance + 1) * 1000;
              expect(await verifier.verify(`Bearer ${token}`)).toMatchObject({
                ok: false,
                reason: 'expired',
              });
            }
          },
        ),
        { numRuns: Math.min(RUNS.numRuns, 200) },
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('retired and rotated keys', () => {
  it('during a rotation both keys verify; once the old key is retired its tokens are refused, even unexpired', async () => {
    const fromOld = await mintContextToken(retired.signing, CALL, { now: () => T0 });
    const fromNew = await mintContextToken(current.signing, CALL, { now: () => T0 });
    const overlap = new Map([['basic-user', [...retired.verifying, ...current.verifying]]]);
    expect(await verifyContextToken(fromOld, opts(T0 + 1000, { roleKeys: overlap }))).toMatchObject({
      ok: true,
    });
    expect(await verifyContextToken(fromNew, opts(T0 + 1000, { roleKeys: overlap }))).toMatchObject({
      ok: true,
    });
    // Retired: the token is well inside its lifetime, but its key is no longer trusted.
    expect(await verifyContextToken(fromOld, opts(T0 + 1000))).toEqual({
      ok: false,
      reason: 'bad_signature',
    });
    expect(await verifyContextToken(fromNew, opts(T0 + 1000))).toMatchObject({ ok: true });
  });

  it('a key resolver that fails (key store down) refuses, never throws and never accepts', async () => {
    const token = await mintContextToken(current.signing, CALL, { now: () => T0 });
    const down = () => {
      throw new Error('key store unavailable');
    };
    const slowDown = async () => {
      throw new Error('timeout');
    };
    expect(await verifyContextToken(token, opts(T0, { roleKeys: down }))).toEqual({
      ok: false,
      reason: 'malformed',
    });
    expect(await verifyContextToken(token, opts(T0, { roleKeys: slowDown }))).toEqual({
      ok: false,
      reason: 'malformed',
    });
    expect(await verifyContextToken(token, opts(T0, { roleKeys: () => [] }))).toEqual({
      ok: false,
      reason: 'unknown_role',
    });
  });
});

describe('the audit chain while the wall clock steps', () => {
  it('entries written across a backward and a forward step still chain and verify (ts is recorded, not trusted)', async () => {
    const dir = await tempDir('clock');
    let clock = T0;
    const chain = await AuditChain.open({ dir, agent: 'clock', now: () => new Date(clock), sync: 'never' });
    try {
      const steps = [0, -3_600_000, 5, 86_400_000, -86_400_000 * 2, 1];
      for (const [i, step] of steps.entries()) {
        clock += step;
        await chain.append({
          decision_id: `d-${i}`,
          agent: 'clock',
          kind: 'evaluate',
          action: { type: 'file_read', path: `/data/${i}` },
          effect: 'ALLOW',
          rule: 'r',
          reason: 'matched',
          policy_digest: 'x',
        });
      }
      await chain.close();
      expect(await verifyChain(chain.path)).toMatchObject({ ok: true, count: steps.length });
    } finally {
      await chain.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
