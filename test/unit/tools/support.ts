// Shared fixtures for the MCP gateway tests: role keys, an end-user IdP, the helpdesk server, a real sidecar with
// the gateway mounted, an SDK client as the agent, and a hand-written upstream that misbehaves on request.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { exportJWK, generateKeyPair, type JWK, SignJWT } from 'jose';
import { pino } from 'pino';
import { expect } from 'vitest';
import {
  DEFAULT_HELPDESK_ALLOWLIST,
  type HelpdeskToolServer,
  startHelpdeskToolServer,
} from '../../../agents/helpdesk-tools/server.ts';
import type { AuditSyncMode } from '../../../sidecar/audit/chain.ts';
import type { AuditEntry } from '../../../sidecar/audit/entry.ts';
import { isSidecarError, type SidecarError } from '../../../sidecar/errors.ts';
import type { KeyLike } from '../../../sidecar/identity/context-token.ts';
import {
  createEndUserVerifier,
  type EndUserVerifier,
  type IdentityConfig,
} from '../../../sidecar/identity/end-user.ts';
import { generateRoleKeyPair, importVerificationKeys } from '../../../sidecar/identity/keys.ts';
import { type Sidecar, startSidecar } from '../../../sidecar/server/sidecar.ts';
import type { McpConfigInput } from '../../../sidecar/tools/config.ts';
import { createToolGateway, type ToolGateway } from '../../../sidecar/tools/gateway.ts';
import { completeAuditEntries } from '../../support/audit-lines.ts';

export const ROLES = ['basic-user', 'support-agent', 'admin'] as const;
export type Role = (typeof ROLES)[number];
export const POLICY_DIR = join(import.meta.dirname, '../../../policies');
export const IDP_AUDIENCE = 'helpdesk-agents';
export const IDP_ISSUER = 'https://idp.helpdesk.test';

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `${prefix}-`));
}

/** One Ed25519 pair per role: private JWK files for the sidecars, public keys for the tool server. */
export async function roleKeyFiles(dir: string) {
  const privateFiles = new Map<Role, string>();
  const roleKeys = new Map<string, KeyLike[]>();
  for (const role of ROLES) {
    const pair = await generateRoleKeyPair();
    const file = join(dir, `${role}.private.jwk.json`);
    await writeFile(file, JSON.stringify(pair.privateJwk));
    privateFiles.set(role, file);
    roleKeys.set(role, await importVerificationKeys(pair.publicJwk));
  }
  return { privateFiles, roleKeys };
}

/**
 * The helpdesk's own allowlist, spelled out for basic users: get_user_info is on it (own profile only, args.user_id
 * equal to the token's sub, as the basic-user policy also requires).
 */
export const TEST_ALLOWLIST: Readonly<Record<string, readonly string[]>> = {
  ...DEFAULT_HELPDESK_ALLOWLIST,
  'basic-user': ['query_knowledge_base', 'submit_ticket', 'get_user_info'],
};

/** The helpdesk tool server; `audience` is the context audience it verifies against (default the sidecar's). */
export async function startHelpdesk(
  roleKeys: Map<string, KeyLike[]>,
  opts: { readonly audience?: string } = {},
): Promise<HelpdeskToolServer> {
  return startHelpdeskToolServer({
    roleKeys,
    allowlist: TEST_ALLOWLIST,
    ...(opts.audience === undefined ? {} : { audience: opts.audience }),
  });
}

/** A stand-in identity provider: one signing key, a JWKS file, and tokens on demand. */
export async function startIdp(dir: string, name = 'idp') {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid: `${name}-1`, alg: 'ES256', use: 'sig' };
  const jwksFile = join(dir, `${name}.jwks.json`);
  await writeFile(jwksFile, JSON.stringify({ keys: [publicJwk] }));
  const issue = (
    claims: Record<string, unknown>,
    opts: { aud?: string; iss?: string; expiresIn?: number | string; header?: Record<string, unknown> } = {},
  ) => {
    const jwt = new SignJWT(claims)
      .setProtectedHeader({ alg: 'ES256', kid: `${name}-1`, ...opts.header })
      .setIssuedAt()
      .setIssuer(opts.iss ?? IDP_ISSUER)
      .setAudience(opts.aud ?? IDP_AUDIENCE);
    if (opts.expiresIn !== undefined) jwt.setExpirationTime(opts.expiresIn);
    else jwt.setExpirationTime('5m');
    return jwt.sign(privateKey);
  };
  return { jwksFile, publicJwk, issue };
}

export function identityConfig(jwksFile: string, required = true): IdentityConfig {
  return { required, jwks_file: jwksFile, audience: IDP_AUDIENCE, issuer: IDP_ISSUER };
}

export interface StartedSidecar {
  readonly sidecar: Sidecar;
  readonly gateway: ToolGateway;
  readonly url: string;
  readonly auditDir: string;
  readonly policyFile: string;
  audit(): Promise<AuditEntry[]>;
  close(): Promise<void>;
}

export interface SidecarSetup {
  /** Policy YAML text, or a file in policies/. */
  readonly policy: { readonly text: string } | { readonly file: string };
  readonly mcp: McpConfigInput;
  readonly identity?: IdentityConfig;
  readonly approvalTimeoutMs?: number;
  readonly auditSync?: AuditSyncMode;
}

/** The real sidecar (startSidecar) with the gateway mounted at /mcp, listening on 127.0.0.1:0. */
export async function startGatewaySidecar(setup: SidecarSetup): Promise<StartedSidecar> {
  const dir = await tempDir('mcp-sidecar');
  const policyFile = join(dir, 'policy.yaml');
  const text =
    'text' in setup.policy ? setup.policy.text : await readFile(join(POLICY_DIR, setup.policy.file), 'utf8');
  await writeFile(policyFile, text);
  const auditDir = join(dir, 'audit');
  let gateway: ToolGateway | undefined;
  const logger = pino({ level: 'silent' });
  // A sidecar that refuses to start closes what it opened; its directory is removed here.
  const sidecar = await startSidecar(
    {
      policyPath: policyFile,
      listen: { host: '127.0.0.1', port: 0 },
      auditDir,
      watchPolicy: false,
      ...(setup.approvalTimeoutMs === undefined ? {} : { approvalTimeoutMs: setup.approvalTimeoutMs }),
      ...(setup.auditSync === undefined ? {} : { auditSync: setup.auditSync }),
      mounts: async (parts) => {
        const identity: EndUserVerifier | undefined =
          setup.identity === undefined
            ? undefined
            : await createEndUserVerifier(setup.identity, { agent: parts.policies.current.agent });
        gateway = await createToolGateway({
          config: setup.mcp,
          ...(identity === undefined ? {} : { identity }),
          parts,
        });
        return [gateway.route];
      },
    },
    logger,
  ).catch(async (err: unknown) => {
    await rm(dir, { recursive: true, force: true });
    throw err;
  });
  const gw = gateway as unknown as ToolGateway;
  const agent = sidecar.policies.current.agent;
  return {
    sidecar,
    gateway: gw,
    url: `http://127.0.0.1:${sidecar.agentAddress.port}/mcp`,
    auditDir,
    policyFile,
    audit: async () => {
      return completeAuditEntries(
        await readFile(join(auditDir, `${agent}.audit.jsonl`), 'utf8').catch(() => ''),
      );
    },
    close: async () => {
      await sidecar.close(1_000);
      await gw.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The agent: the official SDK client over Streamable HTTP, optionally carrying an end user's token. */
export async function connectAgent(url: string, token?: string): Promise<Client> {
  const client = new Client({ name: 'test-agent', version: '0.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(url), {
    ...(token === undefined ? {} : { requestInit: { headers: { authorization: `Bearer ${token}` } } }),
  });
  await client.connect(transport);
  return client;
}

export interface RawResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly text: string;
  readonly json: unknown;
}

/** One raw HTTP request to the gateway: what an agent that is not the SDK could send. */
export async function rawPost(
  url: string,
  body: string | Uint8Array,
  headers: Record<string, string> = {},
  method = 'POST',
): Promise<RawResponse> {
  const res = await fetch(url, {
    method,
    headers: {
      'content-type': 'application/json',
      accept: 'application/json, text/event-stream',
      ...headers,
    },
    ...(method === 'GET' || method === 'HEAD' ? {} : { body }),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = text === '' ? undefined : JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

export function rpc(method: string, params?: unknown, id: string | number = 1): string {
  return JSON.stringify({ jsonrpc: '2.0', id, method, ...(params === undefined ? {} : { params }) });
}

/** Replaces the JSON-RPC id and the decision id, the only parts a uniform denial may vary in. */
export function withoutIds(text: string): string {
  return text
    .replace(/"id":("[^"]*"|\d+)/, '"id":"<id>"')
    .replace(/"decision_id":"[0-9a-f-]{36}"/, '"decision_id":"<decision>"');
}

// ---- a hand-written upstream MCP server that can misbehave, one behaviour per tool name ----

export type FakeBehaviour =
  | 'echo'
  | 'sse'
  | 'created'
  | 'accepted'
  | 'garbage'
  | 'duplicate-keys'
  | 'batch'
  | 'html'
  | 'huge'
  | 'huge-chunked'
  | 'reset'
  | 'hang'
  | 'rpc-error'
  | 'wrong-id'
  | 'bad-result'
  | 'sse-no-response';

export interface FakeUpstream {
  readonly url: string;
  /** Every JSON-RPC message received, with the headers it came with. */
  readonly received: Array<{
    method: string;
    headers: IncomingMessage['headers'];
    body: Record<string, unknown>;
  }>;
  /** Forgets every session, as a restarted stateful server would: the next request carrying one gets 404. */
  dropSessions(): void;
  close(): Promise<void>;
}

const SECRET_TEXT = 'Traceback: /srv/secret/admin_tools.py line 42';

export async function startFakeUpstream(
  /** `definition`: more members of the listed definition (a `title`, `annotations`, ...). */
  tools: ReadonlyArray<{ name: string; behaviour: FakeBehaviour; definition?: Record<string, unknown> }>,
  opts: { sessions?: boolean } = {},
): Promise<FakeUpstream> {
  const received: FakeUpstream['received'] = [];
  const behaviours = new Map(tools.map((t) => [t.name, t.behaviour]));
  const sessions = new Set<string>();
  let nextSession = 0;
  const server: Server = createServer((req, res) => {
    if (req.method !== 'POST') {
      res.writeHead(405).end();
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      const method = String(body['method'] ?? '');
      received.push({ method, headers: req.headers, body });
      const id = body['id'];
      const json = (payload: unknown, status = 200, headers: Record<string, string> = {}) => {
        res
          .writeHead(status, { 'content-type': 'application/json', ...headers })
          .end(JSON.stringify(payload));
      };
      if (opts.sessions && method !== 'initialize') {
        const sid = req.headers['mcp-session-id'];
        if (typeof sid !== 'string' || !sessions.has(sid)) {
          res.writeHead(404).end();
          return;
        }
      }
      if (id === undefined) {
        res.writeHead(202).end();
        return;
      }
      if (method === 'initialize') {
        const sid = `s-${++nextSession}`;
        sessions.add(sid);
        json(
          {
            jsonrpc: '2.0',
            id,
            result: {
              protocolVersion: '2025-11-25',
              capabilities: { tools: {} },
              serverInfo: { name: 'fake', version: '0' },
            },
          },
          200,
          opts.sessions ? { 'mcp-session-id': sid } : {},
        );
        return;
      }
      if (method === 'tools/list') {
        json({
          jsonrpc: '2.0',
          id,
          result: {
            tools: tools.map((t) => ({
              name: t.name,
              description: `fake ${t.behaviour}`,
              inputSchema: { type: 'object', properties: { text: { type: 'string' } } },
              ...t.definition,
            })),
          },
        });
        return;
      }
      if (method !== 'tools/call') {
        json({ jsonrpc: '2.0', id, error: { code: -32601, message: 'Method not found' } });
        return;
      }
      const params = body['params'] as { name: string; arguments?: unknown };
      const ok = {
        jsonrpc: '2.0',
        id,
        result: { content: [{ type: 'text', text: JSON.stringify(params.arguments) }] },
      };
      switch (behaviours.get(params.name)) {
        case 'echo':
          return json(ok);
        case 'created':
          return json(ok, 201);
        case 'sse':
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.write('id: prime-1\ndata: \n\n');
          res.write(
            `event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 1, progress: 1 } })}\n\n`,
          );
          res.end(`event: message\ndata: ${JSON.stringify(ok)}\n\n`);
          return;
        case 'sse-no-response':
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.end(
            `data: ${JSON.stringify({ jsonrpc: '2.0', method: 'notifications/message', params: {} })}\n\n`,
          );
          return;
        case 'accepted':
          res.writeHead(202).end();
          return;
        case 'garbage':
          res
            .writeHead(200, { 'content-type': 'application/json' })
            .end(
              `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":{"content":[{"type":"text","text":"${SECRET_TEXT}"}]`,
            );
          return;
        case 'duplicate-keys':
          res
            .writeHead(200, { 'content-type': 'application/json' })
            .end(
              `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":{"content":[{"type":"text","text":"first"}]},"result":{"content":[{"type":"text","text":"${SECRET_TEXT}"}]}}`,
            );
          return;
        case 'batch':
          return json([ok]);
        case 'html':
          res.writeHead(200, { 'content-type': 'text/html' }).end(`<html>${SECRET_TEXT}</html>`);
          return;
        case 'huge': {
          // Declared up front: refused on the Content-Length alone.
          const big = JSON.stringify({
            ...ok,
            result: { content: [{ type: 'text', text: 'x'.repeat(2 * 1024 * 1024) }] },
          });
          res
            .writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(big) })
            .end(big);
          return;
        }
        case 'huge-chunked': {
          // No length declared: refused once the bytes read pass the cap.
          res.writeHead(200, { 'content-type': 'application/json' });
          const chunk = 'x'.repeat(64 * 1024);
          res.write(
            `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"result":{"content":[{"type":"text","text":"`,
          );
          for (let i = 0; i < 32; i++) res.write(chunk);
          res.end('"}]}}');
          return;
        }
        case 'reset':
          req.socket.destroy();
          return;
        case 'hang':
          return;
        case 'rpc-error':
          return json({ jsonrpc: '2.0', id, error: { code: -32603, message: SECRET_TEXT } });
        case 'wrong-id':
          return json({ ...ok, id: 'someone-else' });
        case 'bad-result':
          return json({ jsonrpc: '2.0', id, result: { content: 'not an array' } });
        default:
          return json({ jsonrpc: '2.0', id, error: { code: -32602, message: 'Unknown tool' } });
      }
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    received,
    dropSessions: () => sessions.clear(),
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

export { SECRET_TEXT };

/** Runs `build` (a config parse or catalog build) and returns the SidecarError it must throw: CONFIG_INVALID, one line. */
export function configRefusal(build: () => unknown): SidecarError {
  let thrown: unknown;
  try {
    build();
  } catch (err) {
    thrown = err;
  }
  expect(isSidecarError(thrown)).toBe(true);
  const e = thrown as SidecarError;
  expect(e.code).toBe('SIDECAR_ERR_CONFIG_INVALID');
  expect(e.message).not.toMatch(/\n/);
  return e;
}

/** Starts a gateway sidecar that must be refused as misconfigured (one that starts is closed); returns the refusal. */
export async function startRefusal(setup: SidecarSetup): Promise<SidecarError> {
  const err = await startGatewaySidecar(setup).then(
    async (s) => {
      await s.close();
      return undefined;
    },
    (e: unknown) => e,
  );
  expect(isSidecarError(err)).toBe(true);
  expect((err as SidecarError).code).toBe('SIDECAR_ERR_CONFIG_INVALID');
  return err as SidecarError;
}

/** An admin policy allowing exactly `crm.delete_user`, a tool of the namespaced upstream `crm`. */
export const CRM_DELETE_POLICY = `version: 1
agent: "admin"
rules:
  - name: "crm-delete"
    action: tool_call
    conditions: { tool: { equals: "crm.delete_user" } }
    effect: ALLOW
`;
