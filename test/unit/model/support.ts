// Shared harness for the model gateway suites: a real sidecar (enforcer, audit chain) with the gateway mounted on
// 127.0.0.1 port 0, the model stand-in as its upstream, and the official SDKs pointed at it.
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach } from 'vitest';
import { type ModelStub, startModelStub } from '../../../agents/model-stub/server.ts';
import type { AuditEntry } from '../../../sidecar/audit/entry.ts';
import type { ErrorCode } from '../../../sidecar/errors.ts';
import type { ModelConfig } from '../../../sidecar/model/config.ts';
import { createModelGateway, type ModelGateway } from '../../../sidecar/model/gateway.ts';
import type { DecisionRequest, Enforcer } from '../../../sidecar/server/enforcer-types.ts';
import { type Sidecar, startSidecar } from '../../../sidecar/server/sidecar.ts';
import { completeAuditEntries } from '../../support/audit-lines.ts';

/** The key the sidecar holds; the stub refuses any call that does not carry exactly this one. */
export const REAL_KEY = 'sk-real-0123456789-never-leaves-the-sidecar';
/** What the agent's SDK is configured with: it must never reach the stub. */
export const AGENT_KEY = 'sk-agent-bogus-key-xyz';
export const AGENT = 'model-tester';

export const BASE_POLICY = `agent: ${AGENT}
rules:
  - name: small-models
    action: model
    conditions:
      model: { in: [stub-small, stub-slow, stub-error-500, stub-error-429, stub-reset, stub-unpriced] }
    effect: ALLOW
  - name: knowledge-base
    action: tool_call
    conditions: { tool: { equals: query_knowledge_base } }
    effect: ALLOW
  - name: tickets
    action: tool_call
    conditions:
      tool: { equals: submit_ticket }
      args.priority: { in: [low, normal] }
    effect: ALLOW
`;

export const PRICES = {
  'stub-small': { input_per_mtok: 1, output_per_mtok: 5 },
  'stub-slow': { input_per_mtok: 1, output_per_mtok: 5 },
  'stub-error-*': { input_per_mtok: 1, output_per_mtok: 5 },
  'stub-reset': { input_per_mtok: 1, output_per_mtok: 5 },
};

export interface GatewayOptions {
  readonly policy?: string;
  /** Overrides merged over a config that points both providers at the stub and reads keys from `env`. */
  readonly config?: Partial<ModelConfig>;
  readonly env?: Record<string, string | undefined>;
  readonly now?: () => Date;
  /** Reuse a directory (a restart); default a fresh one. */
  readonly dir?: string;
  /**
   * Hands the gateway an enforcer that also has `record` (proposed for the real one), collecting what it records
   * here; without it the gateway sees the enforcer as it is today.
   */
  readonly records?: Array<{ readonly req: DecisionRequest; readonly reason: string }>;
}

export interface GatewayUnderTest {
  readonly sidecar: Sidecar;
  readonly gateway: ModelGateway;
  readonly dir: string;
  readonly url: string;
  readonly logs: Array<Record<string, unknown>>;
  /** Raw text of everything the sidecar logged. */
  logText(): string;
  anthropic(opts?: { headers?: Record<string, string> }): Anthropic;
  openai(opts?: { headers?: Record<string, string> }): OpenAI;
  audit(): Promise<AuditEntry[]>;
  auditText(): Promise<string>;
  close(): Promise<void>;
}

// Directories startGateway made in this file, removed after its tests; not by close(), since a restart (opts.dir)
// reuses the directory of the gateway it replaces. This hook is registered when the file imports this module, before
// the file's own hooks, and vitest runs after-hooks in reverse order: gateways are closed before their dirs go.
const madeDirs: string[] = [];
afterAll(async () => {
  for (const dir of madeDirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function madeDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'model-gw-'));
  madeDirs.push(dir);
  return dir;
}

/** A model stub requiring REAL_KEY, on 127.0.0.1 port 0. */
export function startStub(): Promise<ModelStub> {
  return startModelStub({ requireApiKey: REAL_KEY });
}

export async function startGateway(upstream: string, opts: GatewayOptions = {}): Promise<GatewayUnderTest> {
  const dir = opts.dir ?? (await madeDir());
  const policyPath = join(dir, 'policy.yaml');
  await writeFile(policyPath, opts.policy ?? BASE_POLICY);
  const logs: Array<Record<string, unknown>> = [];
  let logText = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logText += chunk.toString('utf8');
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line));
      cb();
    },
  });
  const logger = pino({ level: 'info' }, sink);
  const config: ModelConfig = {
    anthropic: { upstream, api_key_env: 'TEST_ANTHROPIC_KEY' },
    openai: { upstream, api_key_env: 'TEST_OPENAI_KEY' },
    prices: PRICES,
    ...opts.config,
  };
  const env = opts.env ?? { TEST_ANTHROPIC_KEY: REAL_KEY, TEST_OPENAI_KEY: REAL_KEY };
  let gateway: ModelGateway | undefined;
  const sidecar = await startSidecar(
    {
      policyPath,
      listen: { host: '127.0.0.1', port: 0 },
      auditDir: join(dir, 'audit'),
      watchPolicy: false,
      auditSync: 'never',
      mounts: async (parts) => {
        const records = opts.records;
        const enforcer: Enforcer = parts.enforcer;
        const withRecord = records
          ? {
              ...parts,
              enforcer: {
                agent: enforcer.agent,
                decide: (req: DecisionRequest) => enforcer.decide(req),
                refuse: (req: DecisionRequest, reason: string, code?: ErrorCode) =>
                  enforcer.refuse(req, reason, code),
                record: async (req: DecisionRequest, reason: string) => {
                  records.push({ req, reason });
                  return true;
                },
              },
            }
          : parts;
        gateway = await createModelGateway({
          config,
          parts: withRecord,
          auditDir: join(dir, 'audit'),
          env,
          ...(opts.now ? { now: opts.now } : {}),
        });
        return gateway.routes;
      },
    },
    logger,
  );
  const url = `http://127.0.0.1:${sidecar.agentAddress.port}`;
  const auditFile = join(dir, 'audit', `${AGENT}.audit.jsonl`);
  const auditText = () => readFile(auditFile, 'utf8');
  return {
    sidecar,
    gateway: gateway as ModelGateway,
    dir,
    url,
    logs,
    logText: () => logText,
    anthropic: (o = {}) =>
      new Anthropic({
        apiKey: AGENT_KEY,
        baseURL: `${url}/anthropic`,
        maxRetries: 0,
        ...(o.headers ? { defaultHeaders: o.headers } : {}),
      }),
    openai: (o = {}) =>
      new OpenAI({
        apiKey: AGENT_KEY,
        baseURL: `${url}/openai/v1`,
        maxRetries: 0,
        ...(o.headers ? { defaultHeaders: o.headers } : {}),
      }),
    audit: async () => completeAuditEntries(await auditText()),
    auditText,
    close: async () => {
      // The sidecar drains its listener first, so every call has settled before the gateway writes its spend file.
      await sidecar.close(1000);
      await gateway?.close();
    },
  };
}

/** Model-call decisions in the audit log, oldest first. */
/**
 * One stand-in and one gateway for a whole suite file: started before all its tests (then handed to `ready`), closed
 * after them, and the stand-in's request log cleared before each test.
 */
export function useStubGateway(
  opts: GatewayOptions,
  ready: (stub: ModelStub, gw: GatewayUnderTest) => void,
): void {
  let stub: ModelStub | undefined;
  let gw: GatewayUnderTest | undefined;
  beforeAll(async () => {
    stub = await startStub();
    gw = await startGateway(stub.url, opts);
    ready(stub, gw);
  });
  afterAll(async () => {
    await gw?.close();
    await stub?.close();
  });
  beforeEach(() => {
    if (stub) stub.requests.length = 0;
  });
}

export function modelEntries(entries: readonly AuditEntry[]): AuditEntry[] {
  return entries.filter((e) => e.kind === 'model');
}

/** The error a rejected SDK promise carries. */
export async function sdkError(p: Promise<unknown>): Promise<{
  status: number | undefined;
  error: unknown;
  headers: Headers | undefined;
  message: string;
}> {
  try {
    await p;
  } catch (err) {
    const e = err as { status?: number; error?: unknown; headers?: Headers; message: string };
    return { status: e.status, error: e.error, headers: e.headers, message: e.message };
  }
  throw new Error('expected the call to fail');
}

/**
 * A scripted upstream (every request's JSON body handed to `answer` with its model) and a gateway in front of it,
 * shared by the tests of one file: started before them, closed after them. Read `gw` inside tests and hooks.
 */
export function useScriptedUpstream(
  answer: (model: string, req: IncomingMessage, res: ServerResponse) => void,
  opts: GatewayOptions,
): { readonly gw: GatewayUnderTest } {
  let upstream: Server | undefined;
  let gw: GatewayUnderTest | undefined;
  beforeAll(async () => {
    upstream = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { model: string };
        answer(body.model, req, res);
      });
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const { port } = upstream.address() as AddressInfo;
    gw = await startGateway(`http://127.0.0.1:${port}`, opts);
  });
  afterAll(async () => {
    await gw?.close();
    upstream?.closeAllConnections();
    await new Promise<void>((r) => (upstream ? upstream.close(() => r()) : r()));
  });
  return {
    get gw() {
      if (gw === undefined) throw new Error("used before the file's beforeAll started the gateway");
      return gw;
    },
  };
}

/** A non-streamed Anthropic Messages answer, as a scripted upstream sends it. */
export function anthropicMessage(model: string, usage: unknown = { input_tokens: 1, output_tokens: 1 }) {
  return {
    id: 'msg_1',
    type: 'message',
    role: 'assistant',
    model,
    content: [{ type: 'text', text: 'hi' }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    usage,
  };
}

/** A Messages call straight to the gateway, as raw HTTP (no SDK: no retries, any body), with a placeholder key. */
export function postMessages(gatewayUrl: string, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${gatewayUrl}/anthropic/v1/messages`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'x-api-key': 'placeholder',
      'anthropic-version': '2023-06-01',
    },
    body: JSON.stringify(body),
  });
}
