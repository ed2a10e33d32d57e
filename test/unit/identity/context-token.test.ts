// Context tokens: what mint produces, and a table of every way verify must refuse.
import { createHmac, generateKeyPairSync, KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { CompactSign, compactVerify, decodeProtectedHeader, importJWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import type {
  CallContext,
  ContextRefusalReason,
  KeyLike,
  MintOptions,
  SigningKey,
  VerifyOptions,
} from '../../../sidecar/identity/context-token.ts';
import {
  CONTEXT_HEADER,
  mintContextToken,
  mintContextTokenSync,
  verifyContextToken,
  withContextHeader,
} from '../../../sidecar/identity/context-token.ts';
import type { RoleKeyPair } from '../../../sidecar/identity/keys.ts';
import {
  generateRoleKeyPair,
  importSigningKey,
  importVerificationKeys,
} from '../../../sidecar/identity/keys.ts';
import { canonicalJson, sha256Hex } from '../../../sidecar/policy/canonical.ts';

const NOW = 1_700_000_000_000;
const now = (): number => NOW;
const seconds = (s: number) => (): number => NOW + s * 1000;

interface Role {
  pair: RoleKeyPair;
  signing: SigningKey;
  verifying: KeyLike[];
}

async function role(): Promise<Role> {
  const pair = await generateRoleKeyPair();
  return {
    pair,
    signing: await importSigningKey(pair.privateJwk),
    verifying: await importVerificationKeys(pair.publicJwk),
  };
}

let basic: Role;
let admin: Role;
let rogue: Role;
let basicNext: Role;
let odd: Role;

beforeAll(async () => {
  [basic, admin, rogue, basicNext, odd] = await Promise.all([role(), role(), role(), role(), role()]);
});

const ALLOWLIST = {
  'basic-user': ['query_knowledge_base', 'submit_ticket'],
  admin: ['query_knowledge_base', 'submit_ticket', 'delete_user'],
};

const CALL: CallContext = {
  agent: 'helpdesk-basic',
  role: 'basic-user',
  sub: 'u-1001',
  decisionId: 'dec-0001',
  tool: 'submit_ticket',
  args: { subject: 'Locked out', body: 'Reset link expired', priority: 'high' },
};

function verifyOpts(over: Partial<VerifyOptions> = {}): VerifyOptions {
  return {
    roleKeys: new Map([
      ['basic-user', [...basic.verifying, ...basicNext.verifying]],
      ['admin', admin.verifying],
      ['constructor', odd.verifying],
    ]),
    allowlist: ALLOWLIST,
    tool: CALL.tool,
    args: CALL.args,
    now,
    ...over,
  };
}

const mint = (key: SigningKey, ctx: Partial<CallContext> = {}, opts: MintOptions = {}) =>
  mintContextToken(key, { ...CALL, ...ctx }, { now, ...opts });

const b64url = (value: string | Buffer) => Buffer.from(value).toString('base64url');
const unb64url = (value: string) =>
  JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as Record<string, unknown>;

/** Rewrites one part of a signed token and keeps the original signature. */
function tamper(
  token: string,
  part: 'header' | 'payload',
  edit: (obj: Record<string, unknown>) => void,
): string {
  const [h, p, s] = token.split('.') as [string, string, string];
  const index = part === 'header' ? 0 : 1;
  const obj = unb64url([h, p][index] as string);
  edit(obj);
  const encoded = b64url(JSON.stringify(obj));
  return part === 'header' ? `${encoded}.${p}.${s}` : `${h}.${encoded}.${s}`;
}

/** Signs arbitrary claims with a real role key, for claim-shape cases mint would never produce. */
async function signRaw(
  key: SigningKey,
  claims: Record<string, unknown>,
  typ = 'agent-context+jwt',
): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims)))
    .setProtectedHeader({ alg: 'EdDSA', kid: key.kid, typ })
    .sign(key.privateKey);
}

async function validClaims(): Promise<Record<string, unknown>> {
  const token = await mint(basic.signing);
  return unb64url(token.split('.')[1] as string);
}

describe('mintContextToken', () => {
  it('produces an EdDSA compact JWS with the documented header and claims', async () => {
    const token = await mint(basic.signing);
    expect(decodeProtectedHeader(token)).toEqual({
      alg: 'EdDSA',
      kid: basic.pair.kid,
      typ: 'agent-context+jwt',
    });
    expect(unb64url(token.split('.')[1] as string)).toEqual({
      iss: 'agent-sidecar:helpdesk-basic',
      aud: 'agent-sidecar-tools',
      agent: 'helpdesk-basic',
      role: 'basic-user',
      sub: 'u-1001',
      jti: 'dec-0001',
      tool: 'submit_ticket',
      args_sha256: sha256Hex(canonicalJson(CALL.args)),
      iat: NOW / 1000,
      exp: NOW / 1000 + 60,
    });
  });

  it('hashes absent arguments as {} and keeps a null sub', async () => {
    const claims = unb64url(
      (await mint(basic.signing, { args: undefined, sub: null })).split('.')[1] as string,
    );
    expect(claims['args_sha256']).toBe(sha256Hex('{}'));
    expect(claims['sub']).toBeNull();
  });

  it.each([
    ['an empty tool', { tool: '' }, {}],
    ['an empty role', { role: '' }, {}],
    ['a zero ttl', {}, { ttlSeconds: 0 }],
    ['a fractional ttl', {}, { ttlSeconds: 1.5 }],
    ['non-JSON arguments', { args: { n: 10n } }, {}],
  ] as const)('refuses to mint with %s', async (_name, ctx, opts) => {
    await expect(mint(basic.signing, ctx as Partial<CallContext>, opts)).rejects.toThrow();
    expect(() =>
      mintContextTokenSync(basic.signing, { ...CALL, ...(ctx as Partial<CallContext>) }, { now, ...opts }),
    ).toThrow();
  });
});

describe('signing with node:crypto (no thread-pool hop)', () => {
  /** The same private key as a WebCrypto CryptoKey: what jose's CompactSign signed with before. */
  const viaJose = async (
    r: Role,
    ctx: Partial<CallContext> = {},
    opts: MintOptions = {},
  ): Promise<string> => {
    const cryptoKey = (await importJWK(r.pair.privateJwk, 'EdDSA')) as KeyLike;
    return mintContextToken(
      { privateKey: cryptoKey, kid: r.pair.kid },
      { ...CALL, ...ctx },
      { now, ...opts },
    );
  };

  it.each<[string, Partial<CallContext>, MintOptions]>([
    ['the default call', {}, {}],
    ['a null sub and absent args', { sub: null, args: undefined }, {}],
    ['non-ASCII arguments and identifiers', { sub: 'ü-1', args: { q: 'naïve ☃', n: [1, 2.5] } }, {}],
    ['another audience and ttl', {}, { audience: 'billing-tools', ttlSeconds: 300 }],
  ])('gives the token jose gives, byte for byte: %s', async (_name, ctx, opts) => {
    expect(basic.signing.privateKey).toBeInstanceOf(KeyObject);
    const sync = mintContextTokenSync(basic.signing, { ...CALL, ...ctx }, { now, ...opts });
    const jose = await viaJose(basic, ctx, opts);
    const [h, p] = sync.split('.') as [string, string];
    expect(unb64url(h)).toEqual(decodeProtectedHeader(jose));
    expect(unb64url(p)).toEqual(unb64url(jose.split('.')[1] as string));
    // Ed25519 is deterministic: equal signing input, equal key, equal signature.
    expect(sync).toBe(jose);
    expect(await mint(basic.signing, ctx, opts)).toBe(sync);
  });

  it('verifies with jose compactVerify and with verifyContextToken', async () => {
    const token = mintContextTokenSync(basic.signing, CALL, { now });
    const { payload, protectedHeader } = await compactVerify(token, basic.verifying[0] as KeyLike, {
      algorithms: ['EdDSA'],
    });
    expect(protectedHeader).toEqual({ alg: 'EdDSA', kid: basic.pair.kid, typ: 'agent-context+jwt' });
    expect(JSON.parse(new TextDecoder().decode(payload))).toMatchObject({
      jti: 'dec-0001',
      role: 'basic-user',
    });
    expect(await verifyContextToken(token, verifyOpts())).toMatchObject({ ok: true });
    // Signed by another role's key while claiming basic-user: refused as before.
    expect(
      await verifyContextToken(mintContextTokenSync(rogue.signing, CALL, { now }), verifyOpts()),
    ).toEqual({
      ok: false,
      reason: 'bad_signature',
    });
  });

  it('refuses keys it cannot sign inline', async () => {
    const cryptoKey = (await importJWK(basic.pair.privateJwk, 'EdDSA')) as KeyLike;
    expect(() => mintContextTokenSync({ privateKey: cryptoKey, kid: basic.pair.kid }, CALL)).toThrow(
      TypeError,
    );
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(() => mintContextTokenSync({ privateKey: ec.privateKey, kid: 'k' }, CALL)).toThrow(TypeError);
    // A public key is not a signing key, whatever its curve.
    const ed = generateKeyPairSync('ed25519');
    expect(() => mintContextTokenSync({ privateKey: ed.publicKey, kid: 'k' }, CALL)).toThrow(TypeError);
    await expect(mintContextToken({ privateKey: ed.publicKey, kid: 'k' }, CALL)).rejects.toThrow(TypeError);
  });
});

interface Case {
  readonly name: string;
  readonly token: () => Promise<string | null | undefined>;
  readonly opts?: Partial<VerifyOptions>;
  /** 'ok' or the refusal reason. */
  readonly want: 'ok' | ContextRefusalReason;
}

const CASES: readonly Case[] = [
  // Accepted
  { name: 'a fresh token for this tool and these args', token: () => mint(basic.signing), want: 'ok' },
  {
    name: 'a token checked through a resolver function',
    token: () => mint(basic.signing),
    opts: { roleKeys: (r: string) => (r === 'basic-user' ? basic.verifying : undefined) },
    want: 'ok',
  },
  {
    name: 'a token signed by the role’s second (rotated-in) key',
    token: () => mint(basicNext.signing),
    want: 'ok',
  },
  {
    name: 'an admin token for an admin-only tool',
    token: () => mint(admin.signing, { role: 'admin', tool: 'delete_user', args: { user_id: 'u-1' } }),
    opts: { tool: 'delete_user', args: { user_id: 'u-1' } },
    want: 'ok',
  },
  {
    name: 'args with the same members in another order',
    token: () => mint(basic.signing, { args: { a: 1, b: 2 } }),
    opts: { args: { b: 2, a: 1 } },
    want: 'ok',
  },
  {
    name: 'nested args with keys in another order',
    token: () => mint(basic.signing, { args: { x: { p: [1, { q: 2, r: 3 }], s: null } } }),
    opts: { args: { x: { s: null, p: [1, { r: 3, q: 2 }] } } },
    want: 'ok',
  },
  {
    name: 'absent args against {}',
    token: () => mint(basic.signing, { args: undefined }),
    opts: { args: {} },
    want: 'ok',
  },
  {
    name: 'a token that expired within the clock tolerance',
    token: () => mint(basic.signing, {}, { now: seconds(-63) }),
    want: 'ok',
  },
  {
    name: 'a token issued within the clock tolerance',
    token: () => mint(basic.signing, {}, { now: seconds(4) }),
    want: 'ok',
  },
  {
    name: 'a custom audience on both sides',
    token: () => mint(basic.signing, {}, { audience: 'helpdesk' }),
    opts: { audience: 'helpdesk' },
    want: 'ok',
  },
  {
    name: 'a long ttl the verifier was told to accept',
    token: () => mint(basic.signing, {}, { ttlSeconds: 3600 }),
    opts: { maxTtlSeconds: 3600 },
    want: 'ok',
  },

  // No token, or not a token at all
  { name: 'no token', token: async () => undefined, want: 'missing' },
  { name: 'a null token', token: async () => null, want: 'missing' },
  { name: 'an empty header value', token: async () => '', want: 'missing' },
  { name: 'whitespace', token: async () => '   ', want: 'missing' },
  { name: 'a word', token: async () => 'admin', want: 'malformed' },
  { name: 'a bearer prefix', token: async () => `Bearer ${await mint(basic.signing)}`, want: 'malformed' },
  { name: 'three dots', token: async () => '...', want: 'malformed' },
  {
    name: 'two segments',
    token: async () => (await mint(basic.signing)).split('.').slice(0, 2).join('.'),
    want: 'malformed',
  },
  { name: 'a JWE-shaped string', token: async () => 'a.b.c.d.e', want: 'malformed' },
  { name: 'segments that are not JSON', token: async () => 'aaaa.bbbb.cccc', want: 'malformed' },
  { name: 'a huge string', token: async () => `${'a'.repeat(9000)}.b.c`, want: 'malformed' },
  {
    name: 'two tokens joined by a comma',
    token: async () => `${await mint(basic.signing)},x`,
    want: 'malformed',
  },

  // Signatures and keys
  {
    name: 'a token forged with a key no role owns',
    token: () => mint(rogue.signing),
    want: 'bad_signature',
  },
  {
    name: 'the basic-user key claiming the admin role',
    token: () => mint(basic.signing, { role: 'admin' }),
    want: 'bad_signature',
  },
  {
    name: 'a role the tool server has no key for',
    token: () => mint(basic.signing, { role: 'auditor' }),
    want: 'unknown_role',
  },
  {
    name: 'a role named like an Object.prototype member',
    token: () => mint(rogue.signing, { role: 'toString' }),
    want: 'unknown_role',
  },
  {
    name: 'a payload whose role was flipped to admin',
    token: async () => tamper(await mint(basic.signing), 'payload', (c) => (c['role'] = 'admin')),
    want: 'bad_signature',
  },
  {
    name: 'a payload whose tool was flipped',
    token: async () =>
      tamper(
        await mint(basic.signing, { tool: 'query_knowledge_base' }),
        'payload',
        (c) => (c['tool'] = 'submit_ticket'),
      ),
    want: 'bad_signature',
  },
  {
    name: 'a payload whose exp was extended',
    token: async () =>
      tamper(await mint(basic.signing), 'payload', (c) => (c['exp'] = (c['exp'] as number) + 3600)),
    want: 'bad_signature',
  },
  {
    name: 'a payload whose sub was changed',
    token: async () => tamper(await mint(basic.signing), 'payload', (c) => (c['sub'] = 'u-1002')),
    want: 'bad_signature',
  },
  {
    name: 'a signature from another token',
    token: async () => {
      const [h, p] = (await mint(basic.signing)).split('.');
      const s = (await mint(basic.signing, { sub: 'u-2' })).split('.')[2];
      return `${h}.${p}.${s}`;
    },
    want: 'bad_signature',
  },
  {
    name: 'an empty signature',
    token: async () => (await mint(basic.signing)).replace(/[^.]+$/, ''),
    want: 'bad_signature',
  },
  {
    name: 'header alg rewritten to none, signature dropped',
    token: async () =>
      tamper(await mint(basic.signing), 'header', (h) => (h['alg'] = 'none')).replace(/[^.]+$/, ''),
    want: 'bad_signature',
  },
  {
    name: 'header alg rewritten to none, signature kept',
    token: async () => tamper(await mint(basic.signing), 'header', (h) => (h['alg'] = 'none')),
    want: 'bad_signature',
  },
  {
    name: 'HS256 with the role’s public key as the HMAC secret',
    token: async () => {
      const [, p] = (await mint(basic.signing)).split('.');
      const h = b64url(JSON.stringify({ alg: 'HS256', typ: 'agent-context+jwt' }));
      const secret = Buffer.from(basic.pair.publicJwk.x as string, 'base64url');
      return `${h}.${p}.${createHmac('sha256', secret).update(`${h}.${p}`).digest('base64url')}`;
    },
    want: 'bad_signature',
  },
  {
    name: 'header alg rewritten to Ed25519',
    token: async () => tamper(await mint(basic.signing), 'header', (h) => (h['alg'] = 'Ed25519')),
    want: 'bad_signature',
  },
  {
    name: 'a critical header extension',
    token: async () => tamper(await mint(basic.signing), 'header', (h) => (h['crit'] = ['b64'])),
    want: 'malformed',
  },
  {
    name: 'an embedded jwk header',
    token: async () => tamper(await mint(basic.signing), 'header', (h) => (h['jwk'] = rogue.pair.publicJwk)),
    want: 'malformed',
  },

  // Well signed, wrong shape
  {
    name: 'a signed token of another type',
    token: async () => signRaw(basic.signing, await validClaims(), 'JWT'),
    want: 'malformed',
  },
  {
    name: 'a numeric sub',
    token: async () => signRaw(basic.signing, { ...(await validClaims()), sub: 1001 }),
    want: 'malformed',
  },
  {
    name: 'an issuer that does not name the agent',
    token: async () =>
      signRaw(basic.signing, { ...(await validClaims()), iss: 'agent-sidecar:someone-else' }),
    want: 'malformed',
  },
  {
    name: 'no args hash',
    token: async () => signRaw(basic.signing, { ...(await validClaims()), args_sha256: undefined }),
    want: 'malformed',
  },
  {
    name: 'an exp before iat',
    token: async () => {
      const c = await validClaims();
      return signRaw(basic.signing, { ...c, exp: (c['iat'] as number) - 1 });
    },
    want: 'malformed',
  },
  {
    name: 'a fractional iat',
    token: async () => signRaw(basic.signing, { ...(await validClaims()), iat: NOW / 1000 + 0.5 }),
    want: 'malformed',
  },
  {
    name: 'an array audience',
    token: async () => signRaw(basic.signing, { ...(await validClaims()), aud: ['agent-sidecar-tools'] }),
    want: 'malformed',
  },

  // Well signed, wrong for this call
  {
    name: 'an expired token',
    token: () => mint(basic.signing, {}, { now: seconds(-120) }),
    want: 'expired',
  },
  {
    name: 'a token exactly at exp minus tolerance',
    token: () => mint(basic.signing, {}, { now: seconds(-65) }),
    want: 'expired',
  },
  {
    name: 'a token issued in the future',
    token: () => mint(basic.signing, {}, { now: seconds(60) }),
    want: 'not_yet_valid',
  },
  {
    name: 'a token for another audience',
    token: () => mint(basic.signing, {}, { audience: 'billing-tools' }),
    want: 'wrong_audience',
  },
  {
    name: 'a token for another tool',
    token: () => mint(basic.signing, { tool: 'query_knowledge_base' }),
    want: 'wrong_tool',
  },
  {
    name: 'a token for other args',
    token: () => mint(basic.signing, { args: { ...(CALL.args as object), priority: 'low' } }),
    want: 'args_mismatch',
  },
  {
    name: 'a number where a string was signed',
    token: () => mint(basic.signing, { args: { a: 1 } }),
    opts: { args: { a: '1' } },
    want: 'args_mismatch',
  },
  {
    name: 'an extra argument',
    token: () => mint(basic.signing, { args: { a: 1 } }),
    opts: { args: { a: 1, b: 2 } },
    want: 'args_mismatch',
  },
  {
    name: 'array order matters',
    token: () => mint(basic.signing, { args: { ids: [1, 2] } }),
    opts: { args: { ids: [2, 1] } },
    want: 'args_mismatch',
  },
  {
    name: 'a role the tool server does not allow this tool',
    token: () => mint(basic.signing, { tool: 'delete_user', args: { user_id: 'u-1' } }),
    opts: { tool: 'delete_user', args: { user_id: 'u-1' } },
    want: 'role_not_allowed',
  },
  {
    name: 'a signed role the allowlist lacks, named like an Object.prototype member',
    token: () => mint(odd.signing, { role: 'constructor' }),
    want: 'role_not_allowed',
  },
  {
    name: 'a ttl over the default maximum of 300 s',
    token: () => mint(basic.signing, {}, { ttlSeconds: 301 }),
    want: 'ttl_too_long',
  },
  {
    name: 'a ttl over a stricter maximum',
    token: () => mint(basic.signing, {}, { ttlSeconds: 60 }),
    opts: { maxTtlSeconds: 30 },
    want: 'ttl_too_long',
  },

  // The verifier itself is handed something odd: still a value, never a throw.
  {
    name: 'a resolver that throws',
    token: () => mint(basic.signing),
    opts: {
      roleKeys: () => {
        throw new Error('key store down');
      },
    },
    want: 'malformed',
  },
  {
    name: 'call args that are not JSON',
    token: () => mint(basic.signing),
    opts: { args: { n: 10n } },
    want: 'malformed',
  },
];

describe('verifyContextToken', () => {
  it.each(CASES.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const result = await verifyContextToken(await c.token(), verifyOpts(c.opts));
    if (c.want === 'ok') {
      expect(result).toMatchObject({ ok: true });
    } else {
      expect(result).toEqual({ ok: false, reason: c.want });
    }
  });

  it('returns the verified claims', async () => {
    const result = await verifyContextToken(await mint(basic.signing), verifyOpts());
    expect(result.ok && result.claims).toMatchObject({ role: 'basic-user', sub: 'u-1001', jti: 'dec-0001' });
  });

  it('never throws on arbitrary strings', async () => {
    await fc.assert(
      fc.asyncProperty(fc.string({ maxLength: 300 }), async (token) => {
        const result = await verifyContextToken(token, verifyOpts());
        expect(result.ok).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on three base64url segments of arbitrary JSON', async () => {
    const segment = fc.jsonValue().map((v) => b64url(JSON.stringify(v)));
    const header = fc.record({ alg: fc.constantFrom('EdDSA', 'none', 'HS256', 'RS256'), typ: fc.string() });
    await fc.assert(
      fc.asyncProperty(header, segment, fc.string(), async (h, p, s) => {
        const result = await verifyContextToken(
          `${b64url(JSON.stringify(h))}.${p}.${b64url(s)}`,
          verifyOpts(),
        );
        expect(result.ok).toBe(false);
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on validly signed arbitrary claims, and accepts none of them', async () => {
    await fc.assert(
      fc.asyncProperty(fc.dictionary(fc.string(), fc.jsonValue()), async (claims) => {
        const token = await signRaw(basic.signing, { ...claims, role: 'basic-user' });
        const result = await verifyContextToken(token, verifyOpts());
        expect(result.ok).toBe(false);
      }),
      { numRuns: 100 },
    );
  });
});

describe('withContextHeader', () => {
  it('sets a token minted for exactly the tools/call being sent, and nothing on other messages', async () => {
    const seen: Array<{ header: string | null; body: string }> = [];
    const base = async (_url: string | URL, init?: RequestInit): Promise<Response> => {
      seen.push({ header: new Headers(init?.headers).get(CONTEXT_HEADER), body: String(init?.body) });
      return new Response('{}');
    };
    const wrapped = withContextHeader(({ tool, args }) => `${tool}:${canonicalJson(args)}`, base);
    const call = {
      jsonrpc: '2.0',
      id: 3,
      method: 'tools/call',
      params: { name: 'get_user_info', arguments: { user_id: 'u-1' } },
    };
    await wrapped('http://x/mcp', {
      method: 'POST',
      body: JSON.stringify(call),
      headers: { accept: 'application/json' },
    });
    await wrapped('http://x/mcp', {
      method: 'POST',
      body: JSON.stringify({ jsonrpc: '2.0', id: 4, method: 'tools/list' }),
    });
    await wrapped('http://x/mcp', { method: 'GET' });
    expect(seen.map((s) => s.header)).toEqual(['get_user_info:{"user_id":"u-1"}', null, null]);
  });
});
