// End-user tokens: the verifier on its own (signature, lifetime, audience, issuer, role mapping, key sources), and
// the gateway refusing misrouted, expired, forged and missing tokens, audited with both identities.
import { rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HelpdeskToolServer } from '../../../agents/helpdesk-tools/server.ts';
import { SidecarError } from '../../../sidecar/errors.ts';
import {
  createEndUserVerifier,
  type EndUserVerifier,
  type IdentityConfig,
  identityConfigSchema,
} from '../../../sidecar/identity/end-user.ts';
import {
  connectAgent,
  IDP_AUDIENCE,
  IDP_ISSUER,
  identityConfig,
  rawPost,
  roleKeyFiles,
  rpc,
  type StartedSidecar,
  startGatewaySidecar,
  startHelpdesk,
  startIdp,
  tempDir,
} from './support.ts';

let dir: string;
let idp: Awaited<ReturnType<typeof startIdp>>;
let other: Awaited<ReturnType<typeof startIdp>>;

beforeAll(async () => {
  dir = await tempDir('mcp-identity');
  idp = await startIdp(dir, 'idp');
  // Another issuer whose key uses the same kid: a forgery from the verifier's point of view.
  other = await startIdp(dir, 'idp-forger');
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

describe('createEndUserVerifier', () => {
  let verifier: EndUserVerifier;
  beforeAll(async () => {
    verifier = await createEndUserVerifier(identityConfig(idp.jwksFile), { agent: 'basic-user' });
  });

  const forged = async () => {
    const { privateKey } = await generateKeyPair('ES256');
    return new SignJWT({ sub: 'u-1001', role: 'basic-user' })
      .setProtectedHeader({ alg: 'ES256', kid: 'idp-1' })
      .setIssuer(IDP_ISSUER)
      .setAudience(IDP_AUDIENCE)
      .setExpirationTime('5m')
      .sign(privateKey);
  };
  const hs256 = () =>
    new SignJWT({ sub: 'u-1001', role: 'basic-user' })
      .setProtectedHeader({ alg: 'HS256', kid: 'idp-1' })
      .setIssuer(IDP_ISSUER)
      .setAudience(IDP_AUDIENCE)
      .setExpirationTime('5m')
      .sign(new TextEncoder().encode('a-shared-secret-of-sufficient-length!!'));

  it.each<{ note: string; header: () => Promise<string | undefined>; want: string }>([
    {
      note: 'a valid token',
      header: async () => `Bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' })}`,
      want: 'ok',
    },
    {
      note: 'lower-case scheme',
      header: async () => `bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' })}`,
      want: 'ok',
    },
    { note: 'no header', header: async () => undefined, want: 'missing' },
    { note: 'an empty header', header: async () => '  ', want: 'missing' },
    { note: 'Basic credentials', header: async () => 'Basic dXNlcjpwYXNz', want: 'invalid' },
    { note: 'not a JWT', header: async () => 'Bearer abc', want: 'invalid' },
    {
      note: 'signed by another key with the same kid',
      header: async () => `Bearer ${await forged()}`,
      want: 'invalid',
    },
    {
      note: 'another issuer’s key',
      header: async () => `Bearer ${await other.issue({ sub: 'u-1001', role: 'basic-user' })}`,
      want: 'invalid',
    },
    {
      note: 'alg none',
      header: async () =>
        `Bearer ${b64({ alg: 'none' })}.${b64({ sub: 'u-1001', role: 'basic-user', aud: IDP_AUDIENCE, iss: IDP_ISSUER, exp: now() + 300 })}.`,
      want: 'invalid',
    },
    {
      note: 'HS256 (symmetric algorithms are refused)',
      header: async () => `Bearer ${await hs256()}`,
      want: 'invalid',
    },
    {
      note: 'a changed payload',
      header: async () => {
        const [h, , sig] = (await idp.issue({ sub: 'u-1002', role: 'basic-user' })).split('.');
        return `Bearer ${h}.${b64({ sub: 'u-1001', role: 'admin', aud: IDP_AUDIENCE, iss: IDP_ISSUER, exp: now() + 300 })}.${sig}`;
      },
      want: 'invalid',
    },
    {
      note: 'expired an hour ago',
      header: async () =>
        `Bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' }, { expiresIn: now() - 3600 })}`,
      want: 'expired',
    },
    {
      note: 'expired 2 s ago (within the 5 s tolerance)',
      header: async () =>
        `Bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' }, { expiresIn: now() - 2 })}`,
      want: 'ok',
    },
    {
      note: 'another audience',
      header: async () =>
        `Bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' }, { aud: 'billing' })}`,
      want: 'wrong_audience',
    },
    {
      note: 'another issuer name',
      header: async () =>
        `Bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' }, { iss: 'https://evil.test' })}`,
      want: 'invalid',
    },
    {
      note: 'no sub',
      header: async () => `Bearer ${await idp.issue({ role: 'basic-user' })}`,
      want: 'invalid',
    },
    {
      note: 'a numeric sub',
      header: async () => `Bearer ${await idp.issue({ sub: 1001, role: 'basic-user' })}`,
      want: 'invalid',
    },
    {
      note: 'an admin token at the basic-user sidecar',
      header: async () => `Bearer ${await idp.issue({ sub: 'a-1', role: 'admin' })}`,
      want: 'misrouted',
    },
    {
      note: 'no role claim',
      header: async () => `Bearer ${await idp.issue({ sub: 'u-1001' })}`,
      want: 'misrouted',
    },
    {
      note: 'a role array',
      header: async () => `Bearer ${await idp.issue({ sub: 'u-1001', role: ['basic-user'] })}`,
      want: 'misrouted',
    },
  ])('$note -> $want', async ({ header, want }) => {
    const v = await verifier.verify(await header());
    expect(v.ok ? 'ok' : v.reason).toBe(want);
    if (v.ok) expect(v.sub).toBe('u-1001');
  });

  it('reports the token role and claims for misrouted tokens (for the audit)', async () => {
    const v = await verifier.verify(`Bearer ${await idp.issue({ sub: 'a-1', role: 'admin' })}`);
    expect(v).toMatchObject({ ok: false, reason: 'misrouted', role: 'admin', claims: { sub: 'a-1' } });
  });

  it('remembers a genuine token no longer than its exp', async () => {
    let clock = Date.now();
    const v = await createEndUserVerifier(identityConfig(idp.jwksFile), {
      agent: 'basic-user',
      now: () => clock,
    });
    const token = `Bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' }, { expiresIn: Math.floor(clock / 1000) + 10 })}`;
    expect((await v.verify(token)).ok).toBe(true);
    clock += 5_000;
    expect((await v.verify(token)).ok).toBe(true);
    clock += 15_000;
    expect(await v.verify(token)).toEqual({ ok: false, reason: 'expired' });
    // A misrouted token stays misrouted when remembered (the role is checked on every call); a forged one is never kept.
    const admin = `Bearer ${await idp.issue({ sub: 'a-1', role: 'admin' })}`;
    for (let i = 0; i < 2; i++)
      expect(await v.verify(admin)).toMatchObject({ reason: 'misrouted', role: 'admin' });
    const forged = `Bearer ${await other.issue({ sub: 'u-1001', role: 'basic-user' })}`;
    for (let i = 0; i < 2; i++) expect(await v.verify(forged)).toEqual({ ok: false, reason: 'invalid' });
  });

  it('a token without exp never verifies', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
    const file = join(dir, 'noexp.jwks.json');
    await writeFile(
      file,
      JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k', alg: 'ES256' }] }),
    );
    const v = await createEndUserVerifier(identityConfig(file), { agent: 'basic-user' });
    const token = await new SignJWT({ sub: 'u-1', role: 'basic-user' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k' })
      .setIssuer(IDP_ISSUER)
      .setAudience(IDP_AUDIENCE)
      .sign(privateKey);
    expect(await v.verify(`Bearer ${token}`)).toEqual({ ok: false, reason: 'invalid' });
  });

  it('maps role claim values onto agents, from a custom claim', async () => {
    const v = await createEndUserVerifier(
      {
        ...identityConfig(idp.jwksFile),
        role_claim: 'https://helpdesk.test/role',
        role_map: { customer: 'basic-user', staff: 'support-agent' },
      },
      { agent: 'basic-user' },
    );
    const token = async (role: unknown) =>
      `Bearer ${await idp.issue({ sub: 'u-1001', 'https://helpdesk.test/role': role, role: 'basic-user' })}`;
    expect((await v.verify(await token('customer'))).ok).toBe(true);
    expect(await v.verify(await token('staff'))).toMatchObject({ reason: 'misrouted', role: 'staff' });
    // With a map, only mapped values count: the agent name itself is not a role.
    expect(await v.verify(await token('basic-user'))).toMatchObject({ reason: 'misrouted' });
    expect(await v.verify(await token('__proto__'))).toMatchObject({ reason: 'misrouted' });
  });

  it('fetches keys from a JWKS URL', async () => {
    let fetches = 0;
    const jwks = createServer((_req, res) => {
      fetches++;
      res
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ keys: [idp.publicJwk] }));
    });
    await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks`;
    const v = await createEndUserVerifier(
      {
        required: true,
        jwks_url: url,
        audience: IDP_AUDIENCE,
        issuer: IDP_ISSUER,
        insecure_loopback_jwks_url: true,
      },
      { agent: 'basic-user' },
    );
    for (let i = 0; i < 3; i++) {
      expect((await v.verify(`Bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' })}`)).ok).toBe(
        true,
      );
    }
    expect(fetches).toBe(1);
    expect((await v.verify(`Bearer ${await other.issue({ sub: 'u-1', role: 'basic-user' })}`)).ok).toBe(
      false,
    );
    await new Promise<void>((r) => {
      jwks.close(() => r());
      jwks.closeAllConnections();
    });
  });

  it('an unreachable JWKS URL fails closed', async () => {
    const v = await createEndUserVerifier(
      {
        required: true,
        jwks_url: 'http://127.0.0.1:1/jwks',
        audience: IDP_AUDIENCE,
        insecure_loopback_jwks_url: true,
      },
      { agent: 'basic-user' },
    );
    expect(await v.verify(`Bearer ${await idp.issue({ sub: 'u-1001', role: 'basic-user' })}`)).toEqual({
      ok: false,
      reason: 'invalid',
    });
  });

  it.each<{ note: string; config: Partial<IdentityConfig> & Record<string, unknown> }>([
    { note: 'no key source', config: { required: true, audience: 'a' } },
    {
      note: 'two key sources',
      config: { required: true, audience: 'a', jwks_file: '/f', jwks_url: 'https://idp/jwks' },
    },
    {
      note: 'plain http to a remote host',
      config: { required: true, audience: 'a', jwks_url: 'http://idp.example/jwks' },
    },
    {
      note: 'plain http to a remote host even with the loopback opt-in',
      config: {
        required: true,
        audience: 'a',
        jwks_url: 'http://idp.example/jwks',
        insecure_loopback_jwks_url: true,
      },
    },
    // The agent shares the sidecar's loopback: a key set on a plain http loopback port may be the agent's own.
    {
      note: 'plain http on loopback without the development opt-in',
      config: { required: true, audience: 'a', jwks_url: 'http://127.0.0.1:8080/jwks' },
    },
    { note: 'no audience', config: { required: true, jwks_file: '/f' } },
    {
      note: 'an unknown key',
      config: { required: true, audience: 'a', jwks_file: '/f', algorithms: ['HS256'] },
    },
  ])('config refuses $note', ({ config }) => {
    expect(identityConfigSchema.safeParse(config).success).toBe(false);
  });

  it('refuses a JWKS file holding private key material', async () => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const file = join(dir, 'private.jwks.json');
    await writeFile(file, JSON.stringify({ keys: [await exportJWK(privateKey)] }));
    await expect(createEndUserVerifier(identityConfig(file), { agent: 'basic-user' })).rejects.toThrowError(
      SidecarError,
    );
  });
});

describe('the gateway and end-user tokens', () => {
  let keys: Awaited<ReturnType<typeof roleKeyFiles>>;
  let helpdesk: HelpdeskToolServer;
  let admin: StartedSidecar;
  let basic: StartedSidecar;
  let basicOptional: StartedSidecar;

  beforeAll(async () => {
    keys = await roleKeyFiles(dir);
    helpdesk = await startHelpdesk(keys.roleKeys);
    const start = (role: 'admin' | 'basic-user', required = true) =>
      startGatewaySidecar({
        policy: { file: `${role}.yaml` },
        mcp: {
          upstreams: [{ name: 'helpdesk', url: helpdesk.url }],
          context: { key_file: keys.privateFiles.get(role) as string },
        },
        identity: identityConfig(idp.jwksFile, required),
      });
    admin = await start('admin');
    basic = await start('basic-user');
    basicOptional = await start('basic-user', false);
  });
  afterAll(async () => {
    await admin?.close();
    await basic?.close();
    await basicOptional?.close();
    await helpdesk?.close();
  });

  const callWith = (url: string, token: string | undefined, name: string, args: Record<string, unknown>) =>
    rawPost(
      url,
      rpc('tools/call', { name, arguments: args }),
      token === undefined ? {} : { authorization: `Bearer ${token}` },
    );

  it("a basic user's token at the admin sidecar: misrouted, audited with both identities, uniform denial", async () => {
    const token = await idp.issue({ sub: 'u-1001', role: 'basic-user' });
    const before = helpdesk.calls.length;
    // The admin agent lists admin tools, but the call is refused: the end user is not an admin.
    const r = await callWith(admin.url, token, 'list_all_tickets', {});
    expect(r.json).toMatchObject({ error: { code: -32010, data: { code: 'SIDECAR_ERR_POLICY_DENIED' } } });
    expect(helpdesk.calls.length).toBe(before);
    const id = (r.json as { error: { data: { decision_id: string } } }).error.data.decision_id;
    expect((await admin.audit()).find((e) => e.decision_id === id)).toMatchObject({
      agent: 'admin',
      kind: 'tool',
      effect: 'DENY',
      reason: 'misrouted',
      action: { type: 'tool_call', tool: 'list_all_tickets' },
      extra: { end_user_role: 'basic-user', end_user_sub: 'u-1001', sidecar_agent: 'admin' },
    });
  });

  it('the refusal of a misrouted call looks exactly like a policy denial', async () => {
    const misrouted = await callWith(
      admin.url,
      await idp.issue({ sub: 'u-1001', role: 'basic-user' }),
      'list_all_tickets',
      {},
    );
    const denied = await callWith(
      admin.url,
      await idp.issue({ sub: 'admin-1', role: 'admin' }),
      'delete_user',
      {
        user_id: 'admin-2',
      },
    );
    const strip = (t: string) => t.replace(/"decision_id":"[^"]+"/, '');
    expect(strip(misrouted.text)).toBe(strip(denied.text));
  });

  it.each<{ note: string; token: () => Promise<string | undefined>; problem: string }>([
    { note: 'no token', token: async () => undefined, problem: 'missing' },
    {
      note: 'an expired token',
      token: () => idp.issue({ sub: 'u-1001', role: 'basic-user' }, { expiresIn: now() - 3600 }),
      problem: 'expired',
    },
    {
      note: 'a forged token',
      token: () => other.issue({ sub: 'u-1001', role: 'basic-user' }),
      problem: 'invalid',
    },
    {
      note: 'a token for another audience',
      token: () => idp.issue({ sub: 'u-1001', role: 'basic-user' }, { aud: 'billing' }),
      problem: 'wrong_audience',
    },
  ])('$note -> unauthenticated, audited, upstream untouched', async ({ token, problem }) => {
    const before = helpdesk.calls.length;
    const r = await callWith(basic.url, await token(), 'query_knowledge_base', { query: 'invoice' });
    expect(r.json).toMatchObject({
      error: {
        code: -32010,
        message: 'Authentication is required.',
        data: { code: 'SIDECAR_ERR_UNAUTHENTICATED' },
      },
    });
    expect(helpdesk.calls.length).toBe(before);
    const id = (r.json as { error: { data: { decision_id: string } } }).error.data.decision_id;
    expect((await basic.audit()).find((e) => e.decision_id === id)).toMatchObject({
      effect: 'DENY',
      reason: 'unauthenticated',
      extra: { end_user_problem: problem },
    });
  });

  it('tools/list needs no end-user token: it depends on the policy only', async () => {
    const agent: Client = await connectAgent(basic.url);
    expect((await agent.listTools()).tools.length).toBe(3);
    await agent.close();
  });

  describe('identity not required', () => {
    it('a call without a token runs without claims: equals_claim cannot hold', async () => {
      const kb = await callWith(basicOptional.url, undefined, 'query_knowledge_base', { query: 'invoice' });
      expect(kb.json).toMatchObject({ result: {} });
      expect(helpdesk.calls.at(-1)).toMatchObject({
        tool: 'query_knowledge_base',
        role: 'basic-user',
        sub: null,
      });
      const own = await callWith(basicOptional.url, undefined, 'get_user_info', { user_id: 'u-1001' });
      expect(own.json).toMatchObject({ error: { data: { code: 'SIDECAR_ERR_POLICY_DENIED' } } });
    });

    it('a token that is present but bad is still refused', async () => {
      const r = await callWith(
        basicOptional.url,
        await other.issue({ sub: 'u-1001', role: 'basic-user' }),
        'query_knowledge_base',
        {
          query: 'x',
        },
      );
      expect(r.json).toMatchObject({ error: { data: { code: 'SIDECAR_ERR_UNAUTHENTICATED' } } });
    });

    it('with a valid token, the claim is there', async () => {
      const token = await idp.issue({ sub: 'u-1001', role: 'basic-user' });
      const own = await callWith(basicOptional.url, token, 'get_user_info', { user_id: 'u-1001' });
      expect(own.json).toMatchObject({ result: {} });
    });
  });
});
