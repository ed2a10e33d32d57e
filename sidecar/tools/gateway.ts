// The MCP tool gateway at /mcp: per-agent tool visibility, one enforced decision per call, signed forwarding.
//
// The agent side is raw JSON-RPC rather than the SDK's server transport. The gateway must see every byte before
// anything acts on it: duplicate keys are refused (the SDK parses with JSON.parse, last key wins), batches are
// refused whole, unknown members and odd content types are refused, and a denial has to be byte-identical
// whether the tool is hidden, unknown or denied. The SDK would parse first, route by method to handlers, and
// shape errors itself. The surface the gateway answers is small (initialize, ping, tools/list, tools/call), so
// writing it out is cheaper than bending a server framework into failing closed. Upstream, the SDK client is
// used; see upstream.ts.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { type ErrorCode, SidecarError } from '../errors.ts';
import { mintContextTokenSync } from '../identity/context-token.ts';
import type { EndUserVerifier } from '../identity/end-user.ts';
import { loadPrivateKey } from '../identity/keys.ts';
import { isPlainObject } from '../policy/action.ts';
import type { Policy } from '../policy/policy.ts';
import { REASONS } from '../policy/types.ts';
import type { MountedRoute } from '../server/agent-listener.ts';
import { readBody } from '../server/body.ts';
import type { Enforcer, Verdict } from '../server/enforcer-types.ts';
import { canonicalLineLogger, DECISION_MSG, F } from '../server/log-fields.ts';
import type { Metrics } from '../server/metrics.ts';
import { buildCatalog, type Catalog } from './catalog.ts';
import {
  contextAudience,
  DEFAULT_MAX_MESSAGE_BYTES,
  DEFAULT_STARTUP_TIMEOUT_MS,
  type McpConfig,
  type McpConfigInput,
  parseMcpConfig,
} from './config.ts';
import {
  isJsonContentType,
  type JsonRpcId,
  readMessage,
  sendAccepted,
  sendFault,
  sendRefusal,
  sendResult,
} from './json-rpc.ts';
import { type ContextSigner, GATEWAY_NAME, GATEWAY_VERSION, McpUpstream } from './upstream.ts';

export const MCP_PATH = '/mcp';
/** Revisions the gateway negotiates: those without JSON-RPC batching (removed in 2025-06-18). */
export const SUPPORTED_PROTOCOL_VERSIONS: readonly string[] = ['2025-11-25', '2025-06-18'];
const LATEST_PROTOCOL_VERSION = '2025-11-25';
/** Audit reason for a call naming a tool no upstream offers. */
export const UNKNOWN_TOOL_REASON = 'unknown_tool';
/** Operational log fields of this gateway, beside the shared ones in log-fields.ts. */
const MCP_F = {
  rpcMethod: 'rpc_method',
  tool: 'tool',
  upstream: 'upstream',
  upstreams: 'upstreams',
  tools: 'tools',
} as const;
const CALL_PARAMS = new Set(['name', 'arguments', '_meta']);
const LIST_PARAMS = new Set(['_meta']);

/** What the gateway needs from the sidecar: SidecarParts satisfies it. */
export interface GatewayParts {
  readonly enforcer: Enforcer;
  readonly policies: { readonly current: Pick<Policy, 'agent' | 'digest' | 'mayExposeTool'> };
  readonly logger: Logger;
  readonly metrics?: Pick<Metrics, 'upstreamErrors'>;
}

export interface ToolGatewayOptions {
  /** The `mcp` section of the config file: validated (again) here. */
  readonly config: McpConfig | McpConfigInput;
  /** End-user token verification; without it calls carry no claims, so `equals_claim` conditions never hold. */
  readonly identity?: EndUserVerifier;
  readonly parts: GatewayParts;
}

export interface ToolGateway {
  readonly route: MountedRoute;
  /** Tool names in the catalog (all upstreams, before any policy filter), for logs and tests. */
  readonly tools: readonly string[];
  close(): Promise<void>;
}

/**
 * Connects to every upstream, lists their tools and builds the catalog: fails (SidecarError) when the config is
 * invalid (two upstreams with one context audience among others: a token for one would pass at the other), when an
 * upstream does not answer within `startup_timeout_ms`, when two tools would share a name (see buildCatalog), or
 * when the key file is unusable.
 */
export async function createToolGateway(opts: ToolGatewayOptions): Promise<ToolGateway> {
  const config = parseMcpConfig(opts.config);
  const { parts } = opts;
  // The sidecar hands over a logger already bound to this component.
  const logger = parts.logger;
  const agent = parts.policies.current.agent;
  if (opts.identity !== undefined && opts.identity.agent !== agent) {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `identity verifier is bound to "${opts.identity.agent}" but the policy's agent is "${agent}"`,
    );
  }
  const key = await loadPrivateKey(config.context.key_file);
  const ttl = config.context.ttl_seconds === undefined ? {} : { ttlSeconds: config.context.ttl_seconds };
  // One sidecar per role: the agent name is the role the tool servers' allowlists and keys are keyed by.
  // Signed inline (node:crypto), not through WebCrypto: no thread-pool round trip on every call.
  // The audience is the upstream's own (SignedCall.audience), so a token cannot be replayed to another upstream.
  const signer: ContextSigner = {
    mint: ({ audience, ...c }) =>
      mintContextTokenSync(key, { agent, role: agent, ...c }, { ...ttl, audience }),
  };
  const maxMessageBytes = config.max_message_bytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const defaultAudience = contextAudience(config.context);
  const upstreams = config.upstreams.map(
    (u) => new McpUpstream(u, { signer, defaultAudience, maxMessageBytes, logger }),
  );
  let catalog: Catalog<McpUpstream>;
  try {
    catalog = await loadCatalog(upstreams, config.startup_timeout_ms ?? DEFAULT_STARTUP_TIMEOUT_MS, logger);
  } catch (err) {
    await Promise.all(upstreams.map((u) => u.close()));
    throw err;
  }
  logger.info(
    { [MCP_F.upstreams]: upstreams.map((u) => u.name), [MCP_F.tools]: catalog.size },
    'mcp gateway ready: tool lists cached',
  );
  const gateway = new Gateway({ parts, identity: opts.identity, catalog, maxMessageBytes, logger });
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= Promise.all(upstreams.map((u) => u.close())).then(() => undefined);
    return closing;
  };
  // `close` rides along on the route too, for a sidecar that closes what it mounts.
  const route = {
    prefix: MCP_PATH,
    handle: (req: IncomingMessage, res: ServerResponse) => gateway.handle(req, res),
    close,
  };
  return { route, tools: [...catalog.keys()], close };
}

async function loadCatalog(
  upstreams: readonly McpUpstream[],
  timeoutMs: number,
  logger: Logger,
): Promise<Catalog<McpUpstream>> {
  const deadline = performance.now() + timeoutMs;
  const settled = await Promise.allSettled(
    upstreams.map(async (upstream) => ({ upstream, tools: await listWithRetry(upstream, deadline, logger) })),
  );
  const lists = [];
  for (const s of settled) {
    if (s.status === 'rejected') throw s.reason;
    lists.push(s.value);
  }
  return buildCatalog(lists, logger);
}

/**
 * One tools/list attempt, cut at the startup deadline: an upstream that accepted the connection and never answers
 * would otherwise hold startup for its own `timeout_ms` (up to ten minutes) instead of `startup_timeout_ms`.
 */
function listBefore(upstream: McpUpstream, deadline: number): ReturnType<McpUpstream['listTools']> {
  const attempt = upstream.listTools();
  let timer: NodeJS.Timeout | undefined;
  const cut = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(
      () => reject(new SidecarError('SIDECAR_ERR_UPSTREAM_TIMEOUT', 'no answer before startup_timeout_ms')),
      Math.max(0, deadline - performance.now()),
    );
  });
  // The attempt left behind ends when createToolGateway closes the upstream; its failure then has no one to tell.
  attempt.catch(() => undefined);
  return Promise.race([attempt, cut]).finally(() => clearTimeout(timer));
}

async function listWithRetry(upstream: McpUpstream, deadline: number, logger: Logger) {
  let delay = 100;
  for (;;) {
    try {
      return await listBefore(upstream, deadline);
    } catch (err) {
      const e =
        err instanceof SidecarError ? err : new SidecarError('SIDECAR_ERR_UPSTREAM_UNREACHABLE', String(err));
      if (performance.now() + delay >= deadline) {
        throw new SidecarError(
          e.code,
          `upstream "${upstream.name}" (${upstream.url}) did not list its tools: ${e.detail ?? e.message}`,
          { cause: err },
        );
      }
      logger.warn(
        { [MCP_F.upstream]: upstream.name, err: e.detail ?? e.message },
        'upstream not ready; retrying',
      );
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 1_000);
    }
  }
}

interface GatewayDeps {
  readonly parts: GatewayParts;
  readonly identity: EndUserVerifier | undefined;
  readonly catalog: Catalog<McpUpstream>;
  readonly maxMessageBytes: number;
  readonly logger: Logger;
}

class Gateway {
  readonly #d: GatewayDeps;
  /** The filtered tools/list result, serialised once per policy (a reload changes the digest). */
  #listCache: { readonly digest: string; readonly json: string } | undefined;
  readonly #lineLogger: Logger;

  constructor(deps: GatewayDeps) {
    this.#d = deps;
    this.#lineLogger = canonicalLineLogger(deps.logger);
  }

  handle(req: IncomingMessage, res: ServerResponse): void {
    this.#serve(req, res).catch((err: unknown) => {
      this.#d.logger.error({ err: err instanceof Error ? err.message : String(err) }, 'mcp request failed');
      sendFault(res, 'internal');
    });
  }

  async #serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '').split('?')[0];
    const refuse = (fault: Parameters<typeof sendFault>[1]) => {
      req.resume();
      sendFault(res, fault);
    };
    if (path !== MCP_PATH) return refuse('notFound');
    // No standalone server stream (GET) and no sessions to end (DELETE): the gateway is stateless.
    if (req.method !== 'POST') return refuse('methodNotAllowed');
    if (req.headers.origin !== undefined) return refuse('forbiddenOrigin');
    if (!isJsonContentType(req.headers['content-type'])) return refuse('unsupportedMediaType');
    const version = req.headers['mcp-protocol-version'];
    if (
      version !== undefined &&
      (typeof version !== 'string' || !SUPPORTED_PROTOCOL_VERSIONS.includes(version))
    ) {
      return refuse('unsupportedVersion');
    }

    const body = await readBody(req, this.#d.maxMessageBytes);
    if (!body.ok) {
      if (body.code === 'SIDECAR_ERR_REQUEST_TOO_LARGE') res.shouldKeepAlive = false;
      return sendFault(res, body.code === 'SIDECAR_ERR_REQUEST_TOO_LARGE' ? 'tooLarge' : 'invalidRequest');
    }
    const msg = readMessage(body.body);
    switch (msg.kind) {
      case 'invalid':
        return sendFault(res, msg.fault, msg.id);
      case 'notification':
        // Notifications change nothing here (no sessions, no subscriptions): acknowledged, never forwarded.
        return msg.method.startsWith('notifications/') ? sendAccepted(res) : sendFault(res, 'invalidRequest');
      case 'response':
        // The gateway never sends the agent a request, so there is nothing a response could answer.
        return sendFault(res, 'invalidRequest');
      case 'request':
        return this.#dispatch(req, res, msg.id, msg.method, msg.params);
    }
  }

  async #dispatch(
    req: IncomingMessage,
    res: ServerResponse,
    id: JsonRpcId,
    method: string,
    params: Readonly<Record<string, unknown>> | undefined,
  ): Promise<void> {
    switch (method) {
      case 'initialize': {
        const requested = params?.['protocolVersion'];
        if (typeof requested !== 'string') return sendFault(res, 'invalidParams', id);
        return sendResult(res, id, {
          protocolVersion: SUPPORTED_PROTOCOL_VERSIONS.includes(requested)
            ? requested
            : LATEST_PROTOCOL_VERSION,
          capabilities: { tools: { listChanged: false } },
          serverInfo: { name: GATEWAY_NAME, version: GATEWAY_VERSION },
        });
      }
      case 'ping':
        return sendResult(res, id, {});
      case 'tools/list':
        if (params !== undefined && !onlyKeys(params, LIST_PARAMS))
          return sendFault(res, 'invalidParams', id);
        return this.#list(res, id);
      case 'tools/call':
        return this.#call(req, res, id, params);
      default:
        // resources/*, prompts/*, completion/*, logging/*, tasks/* and the rest: one uniform answer.
        return sendFault(res, 'methodNotFound', id);
    }
  }

  #list(res: ServerResponse, id: JsonRpcId): void {
    const policy = this.#d.parts.policies.current;
    let cache = this.#listCache;
    if (cache?.digest !== policy.digest) {
      const tools = [...this.#d.catalog.values()]
        .filter((e) => policy.mayExposeTool(e.exposed))
        .map((e) => e.definition);
      cache = { digest: policy.digest, json: JSON.stringify({ tools }) };
      this.#listCache = cache;
    }
    sendResult(res, id, cache.json, { serialized: true });
  }

  async #call(
    req: IncomingMessage,
    res: ServerResponse,
    id: JsonRpcId,
    params: Readonly<Record<string, unknown>> | undefined,
  ): Promise<void> {
    const started = performance.now();
    if (params === undefined || typeof params['name'] !== 'string' || !onlyKeys(params, CALL_PARAMS)) {
      return sendFault(res, 'invalidParams', id);
    }
    const tool = params['name'];
    // Absent arguments are `{}`: what is decided, signed and forwarded is one and the same object.
    const args = params['arguments'] === undefined ? {} : params['arguments'];
    const action = { type: 'tool_call', tool, args };
    const ac = new AbortController();
    // Only a connection that closes before the answer is sent means the agent went away (approval wait, upstream).
    res.once('close', () => {
      if (!res.writableEnded) ac.abort();
    });
    const { enforcer } = this.#d.parts;

    let claims: Readonly<Record<string, unknown>> | undefined;
    let sub: string | null = null;
    const identity = this.#d.identity;
    if (identity !== undefined) {
      const v = await identity.verify(req.headers.authorization);
      if (v.ok) {
        claims = v.claims;
        sub = v.sub;
      } else if (v.reason === 'misrouted') {
        const verdict = await enforcer.refuse(
          {
            kind: 'tool',
            action,
            extra: {
              end_user_role: v.role ?? null,
              end_user_sub: typeof v.claims?.['sub'] === 'string' ? v.claims['sub'] : null,
              sidecar_agent: identity.agent,
            },
          },
          REASONS.misrouted,
        );
        return this.#refused(res, id, verdict, tool, started);
      } else if (v.reason !== 'missing' || identity.required) {
        const verdict = await enforcer.refuse(
          { kind: 'tool', action, extra: { end_user_problem: v.reason } },
          REASONS.unauthenticated,
          'SIDECAR_ERR_UNAUTHENTICATED',
        );
        return this.#refused(res, id, verdict, tool, started);
      }
    }

    const entry = this.#d.catalog.get(tool);
    const extra = { end_user: sub };
    // An unknown tool is refused through the enforcer too: audited, and the same answer and timing class as a
    // denial. It is not evaluated: a rule that allowed a tool nobody offers must not send it to approval.
    const verdict =
      entry === undefined
        ? await enforcer.refuse({ kind: 'tool', action, extra }, UNKNOWN_TOOL_REASON)
        : await enforcer.decide({
            kind: 'tool',
            action,
            ...(claims === undefined ? {} : { trusted: { claims } }),
            extra,
            signal: ac.signal,
          });
    if (verdict.effect !== 'ALLOW' || entry === undefined)
      return this.#refused(res, id, verdict, tool, started);
    if (!isPlainObject(args)) throw new Error('an allowed tool call must have object arguments');

    try {
      const result = await entry.upstream.callTool(entry.upstreamTool, args, {
        decisionId: verdict.decisionId,
        sub,
        signal: ac.signal,
      });
      // The answer first, then the log line: the agent does not wait for the operator's log.
      sendResult(res, id, result, { decisionId: verdict.decisionId });
      this.#logDecision(verdict, tool, started, entry.upstream.name);
    } catch (err) {
      const e =
        err instanceof SidecarError ? err : new SidecarError('SIDECAR_ERR_UPSTREAM_INVALID', String(err));
      this.#d.parts.metrics?.upstreamErrors.inc({
        kind: `mcp_${e.code.slice('SIDECAR_ERR_UPSTREAM_'.length).toLowerCase()}`,
      });
      sendRefusal(res, id, e.code, verdict.decisionId);
      this.#logDecision(verdict, tool, started, entry.upstream.name, e.code, e.detail);
    }
  }

  #refused(res: ServerResponse, id: JsonRpcId, verdict: Verdict, tool: string, started: number): void {
    const code: ErrorCode = verdict.errorCode ?? 'SIDECAR_ERR_POLICY_DENIED';
    sendRefusal(res, id, code, verdict.decisionId);
    this.#logDecision(verdict, tool, started, undefined, code);
  }

  #logDecision(
    verdict: Verdict,
    tool: string,
    started: number,
    upstream?: string,
    errorCode?: ErrorCode,
    detail?: string,
  ): void {
    this.#lineLogger.info(
      {
        [F.decisionId]: verdict.decisionId,
        [F.kind]: 'tool',
        [MCP_F.rpcMethod]: 'tools/call',
        // The agent chose this string: bounded, and only in the operator's log.
        [MCP_F.tool]: tool.slice(0, 128),
        [F.effect]: verdict.effect,
        [F.rule]: verdict.decision.rule,
        [F.reason]: verdict.decision.reason,
        ...(upstream === undefined ? {} : { [MCP_F.upstream]: upstream }),
        ...(errorCode === undefined ? {} : { [F.errorCode]: errorCode }),
        ...(detail === undefined ? {} : { [F.upstreamError]: detail }),
        [F.durationMs]: Math.round((performance.now() - started) * 1000) / 1000,
      },
      DECISION_MSG,
    );
  }
}

function onlyKeys(o: Readonly<Record<string, unknown>>, allowed: ReadonlySet<string>): boolean {
  for (const k of Object.keys(o)) if (!allowed.has(k)) return false;
  return true;
}
