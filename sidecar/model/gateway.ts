// The model gateway: Anthropic and OpenAI calls through the sidecar, with policy, tool filtering, keys, usage and budgets.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import { Counter } from 'prom-client';
import { Pool } from 'undici';
import type { ErrorCode } from '../errors.ts';
import type { BudgetInfo, Policy } from '../policy/policy.ts';
import { REASONS } from '../policy/types.ts';
import type { MountedRoute } from '../server/agent-listener.ts';
import { readBody } from '../server/body.ts';
import type { DecisionRequest, Enforcer, Verdict } from '../server/enforcer-types.ts';
import { canonicalLineLogger, DECISION_MSG, F } from '../server/log-fields.ts';
import type { Metrics } from '../server/metrics.ts';
import { parseStrictJson } from '../server/strict-json.ts';
import { anthropic } from './anthropic.ts';
import { type ModelConfig, type ResolvedModelConfig, resolveModelConfig } from './config.ts';
import { forwardCall, type Upstream } from './forward.ts';
import { loadApiKey } from './keys.ts';
import { type ModelTotals, type Reservation, type Settlement, SpendLedger } from './ledger.ts';
import { openai } from './openai.ts';
import { sendVendorError } from './respond.ts';
import { defaultSpendFile, loadSpendFile, SpendWriter } from './spend-file.ts';
import { PriceTable, type TokenUsage } from './usage.ts';
import { invalidLimit, isObject, type JsonObject, type Provider, type VendorAdapter } from './vendor.ts';

/**
 * The enforcer, which may also audit a fact that is not a decision (`Enforcer.record`). When it can, each forwarded
 * call gets a `model_usage` entry; otherwise usage goes only to the operational log and the spend file.
 */
export type ModelEnforcer = Enforcer & {
  record?(req: DecisionRequest, reason: string): Promise<boolean>;
};

/** What the gateway takes from the sidecar (SidecarParts fits). */
export interface ModelGatewayParts {
  readonly enforcer: ModelEnforcer;
  readonly policies: { readonly current: Policy };
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** When the sidecar offers it, the gateway registers its close() to run at shutdown. */
  readonly onClose?: (fn: () => Promise<void>) => void;
}

export interface ModelGatewayOptions {
  /** The `model` section of the sidecar configuration (validated here). */
  readonly config: ModelConfig | undefined;
  readonly parts: ModelGatewayParts;
  /** The default spend file lives here, beside the audit log. */
  readonly auditDir: string;
  /** The clock budgets roll over by (UTC day and month). */
  readonly now?: () => Date;
  /** Where `api_key_env` is looked up; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

export interface BudgetSnapshot {
  readonly name: string;
  readonly period: 'day' | 'month';
  readonly period_key: string;
  readonly max_tokens: number | null;
  readonly max_usd: number | null;
  readonly spent_tokens: number;
  readonly spent_usd: number;
  readonly reserved_tokens: number;
  readonly reserved_usd: number;
}

export interface SpendSnapshot {
  readonly agent: string;
  /** The budgets of the policy in force, in their current periods. */
  readonly budgets: readonly BudgetSnapshot[];
  /** Lifetime totals by model name. */
  readonly models: Readonly<Record<string, ModelTotals>>;
}

export interface ModelGateway {
  readonly routes: MountedRoute[];
  /** Cuts calls still in flight (settling their reservations), writes the spend file, closes upstream pools. */
  close(): Promise<void>;
  spend(): SpendSnapshot;
}

const VENDORS: readonly VendorAdapter[] = [anthropic, openai];

/**
 * A usage record is a fact about a call already answered. It waits for the next model decision, so both go out in
 * one audit write (and, with fsync on, one sync), or at most this long. The chain's `interval` mode bounds an
 * unsynced entry by the same 20 ms.
 */
export const USAGE_RECORD_DELAY_MS = 20;

/**
 * Input tokens reserved for each image, document, file or audio part, on top of the body's bytes / 4: an image or
 * PDF fetched by URL or file id is a few bytes in the request. It is above what any one image costs (Anthropic
 * scales images to about 1,600 tokens, OpenAI's dearest detail setting stays under 3,000) and about what a PDF of
 * a few pages costs. A longer document can cost more than this.
 */
export const MEDIA_ITEM_TOKENS = 10_000;

// Fatal: a byte that is not UTF-8 is refused, never replaced, so the policy reads the text the vendor reads. The
// BOM is kept (and refused by the JSON parser), as the vendor receives it.
const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
export const MAX_MODEL_NAME = 256;

type ReadCall =
  | { readonly ok: true; readonly body: JsonObject; readonly model: string }
  | { readonly ok: false; readonly why: string; readonly model?: string };

/** The request body as the vendor will read it, or why the gateway cannot judge it. */
function readCall(raw: Buffer, vendor: VendorAdapter): ReadCall {
  const text = decodeUtf8(raw);
  if (text === undefined) return { ok: false, why: 'not valid UTF-8' };
  // Duplicate keys are refused: the policy must judge the same `model` the vendor will read.
  const parsed = parseStrictJson(text);
  if (!parsed.ok) return { ok: false, why: parsed.why };
  const body = parsed.value;
  if (!isObject(body)) return { ok: false, why: 'not a JSON object' };
  const model = body['model'];
  if (typeof model !== 'string') return { ok: false, why: 'no model' };
  // A model name is an identifier (vendors' are under 100 characters). It is also a key the spend ledger keeps for
  // the sidecar's lifetime and writes to its spend file: an agent-chosen megabyte name must not be one.
  if (model.length > MAX_MODEL_NAME)
    return { ok: false, why: `model name longer than ${MAX_MODEL_NAME} characters` };
  // The reservation must bound what the vendor may produce, so a limit must mean the same to both.
  const limit = invalidLimit(body, vendor.limitFields);
  if (limit !== undefined) return { ok: false, why: `${limit} is not a positive integer`, model };
  return { ok: true, body, model };
}

function decodeUtf8(raw: Buffer): string | undefined {
  try {
    return UTF8.decode(raw);
  } catch {
    return undefined;
  }
}

/** Fields of the one canonical log line per model call. */
interface CallLog {
  provider: Provider;
  model?: string;
  stream?: boolean;
  verdict?: Verdict;
  status?: number;
  errorCode?: ErrorCode;
  reason?: string;
  upstreamError?: string;
  toolsRemoved?: number;
  usage?: TokenUsage;
  costUsd?: number | null;
  reserved?: { tokens: number; usd: number | null };
  settlement?: Settlement['kind'];
}

function modelMetrics(metrics: Metrics) {
  const counter = (name: string, help: string, labelNames: readonly string[]) =>
    (metrics.registry.getSingleMetric(name) as Counter<string> | undefined) ??
    new Counter({ name, help, labelNames, registers: [metrics.registry] });
  return {
    tokens: counter('sidecar_model_tokens_total', 'Model tokens by provider and kind', ['provider', 'kind']),
    cost: counter('sidecar_model_cost_usd_total', 'Model cost in USD (priced models only)', ['provider']),
    calls: counter('sidecar_model_requests_total', 'Model calls by provider and outcome', [
      'provider',
      'outcome',
    ]),
  };
}

export async function createModelGateway(opts: ModelGatewayOptions): Promise<ModelGateway> {
  const config: ResolvedModelConfig = resolveModelConfig(opts.config);
  const { enforcer, policies } = opts.parts;
  const logger = opts.parts.logger.child({ component: 'model' });
  const now = opts.now ?? (() => new Date());
  const env = opts.env ?? process.env;
  const agent = policies.current.agent;
  const prices = new PriceTable(config.prices);
  const metrics = modelMetrics(opts.parts.metrics);

  const spendPath = config.spendFile ?? defaultSpendFile(opts.auditDir, agent);
  const initial = await loadSpendFile(spendPath, agent);
  let writer: SpendWriter | undefined;
  const ledger = new SpendLedger({
    now,
    ...(initial ? { initial } : {}),
    onChange: () => writer?.schedule(),
  });
  writer = new SpendWriter({
    path: spendPath,
    agent,
    now,
    state: () => ledger.state(),
    onError: (err) =>
      logger.error({ err: (err as Error).message, spend_file: spendPath }, 'spend file write failed'),
  });

  // Every key is loaded before any pool is opened, so a bad key file leaves nothing behind.
  const keys = new Map<Provider, string | undefined>();
  for (const vendor of VENDORS) {
    keys.set(vendor.provider, await loadApiKey(config[vendor.provider], vendor.defaultKeyEnv, env));
  }
  const upstreams = new Map<Provider, Upstream>();
  for (const vendor of VENDORS) {
    const url = new URL(config[vendor.provider].upstream ?? vendor.defaultUpstream);
    const key = keys.get(vendor.provider);
    if (key === undefined) {
      logger.warn(
        { provider: vendor.provider },
        `no API key configured: every ${vendor.prefix} call is refused`,
      );
    }
    const pool = new Pool(url.origin, {
      connect: { timeout: config.timeouts.connectMs },
      headersTimeout: config.timeouts.headersMs,
      bodyTimeout: config.timeouts.bodyMs,
    });
    upstreams.set(vendor.provider, { vendor, pool, basePath: url.pathname.replace(/\/+$/, ''), key });
  }

  const warnedUnpriced = new Set<string>();
  const inflight = new Set<AbortController>();
  const running = new Set<Promise<void>>();
  let closing = false;

  const usageRecords: DecisionRequest[] = [];
  const recording = new Set<Promise<unknown>>();
  // Left running when a decision takes the records first: re-arming a timer per call costs more than a spare tick.
  let usageTimer: ReturnType<typeof setTimeout> | undefined;
  /** Hands the waiting usage records to the enforcer: they join whatever audit batch is being formed now. */
  const flushUsageRecords = (): void => {
    if (usageRecords.length === 0 || !enforcer.record) return;
    for (const r of usageRecords.splice(0)) {
      const p = enforcer
        .record(r, 'model_usage')
        .catch(() => false)
        .finally(() => recording.delete(p));
      recording.add(p);
    }
  };
  const recordUsage = (r: DecisionRequest): void => {
    usageRecords.push(r);
    usageTimer ??= setTimeout(() => {
      usageTimer = undefined;
      flushUsageRecords();
    }, USAGE_RECORD_DELAY_MS);
  };
  /** The enforcer, with the waiting usage records written ahead of each new entry. */
  const audit: Pick<Enforcer, 'decide' | 'refuse'> = {
    decide(req) {
      flushUsageRecords();
      return enforcer.decide(req);
    },
    refuse(req, reason, code) {
      flushUsageRecords();
      return enforcer.refuse(req, reason, code);
    },
  };

  const costOf = (model: string, usage: TokenUsage): number | null => {
    const usd = prices.cost(model, usage);
    if (usd === null && !warnedUnpriced.has(model)) {
      warnedUnpriced.add(model);
      logger.warn({ model }, 'no price for this model: tokens are counted, cost is unknown');
    }
    return usd;
  };

  const lineLogger = canonicalLineLogger(logger);
  function logLine(log: CallLog, started: number): void {
    const v = log.verdict;
    lineLogger.info(
      {
        [F.decisionId]: v?.decisionId,
        [F.agent]: agent,
        [F.kind]: 'model',
        provider: log.provider,
        model: log.model,
        stream: log.stream,
        [F.effect]: v?.effect,
        [F.rule]: v?.decision.rule,
        [F.reason]: log.reason ?? v?.decision.reason,
        [F.status]: log.status,
        [F.errorCode]: log.errorCode,
        [F.upstreamError]: log.upstreamError,
        tools_removed: log.toolsRemoved,
        usage: log.usage,
        cost_usd: log.costUsd,
        reserved: log.reserved,
        settlement: log.settlement,
        [F.durationMs]: Math.round((performance.now() - started) * 1000) / 1000,
      },
      DECISION_MSG,
    );
  }

  async function handle(up: Upstream, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const { vendor } = up;
    const log: CallLog = { provider: vendor.provider };
    const fail = (code: ErrorCode, verdict?: Verdict, retry?: boolean) => {
      log.errorCode = code;
      sendVendorError(res, vendor, code, verdict?.decisionId, retry === undefined ? {} : { retry });
      log.status = res.statusCode;
    };
    let reservation: Reservation | undefined;
    const settle = (outcome: Settlement) => {
      if (!reservation) return;
      ledger.settle(reservation, outcome);
      log.settlement = outcome.kind;
      reservation = undefined;
    };
    const abort = new AbortController();
    res.once('close', () => {
      if (!res.writableEnded) abort.abort();
    });
    inflight.add(abort);
    try {
      const [path, query] = splitTarget(req.url ?? '');
      if (path !== vendor.prefix + vendor.path) {
        req.resume();
        return fail('SIDECAR_ERR_NOT_FOUND');
      }
      if (req.method !== 'POST') {
        req.resume();
        return fail('SIDECAR_ERR_METHOD_NOT_ALLOWED');
      }
      // A page the agent renders could post a form here (text/plain, no script needed) and spend the role's budget
      // with the sidecar's key. Vendor SDKs send no Origin; refused before any decision, as on /mcp and /v1/evaluate.
      if (req.headers.origin !== undefined) {
        req.resume();
        return fail('SIDECAR_ERR_POLICY_DENIED');
      }
      const encoding = req.headers['content-encoding'];
      if (encoding !== undefined && encoding.toLowerCase() !== 'identity') {
        req.resume();
        return fail('SIDECAR_ERR_UNSUPPORTED_MEDIA_TYPE');
      }
      const raw = await readBody(req, config.maxRequestBytes);
      if (!raw.ok) return fail(raw.code);

      const call = readCall(raw.body, vendor);
      if (!call.ok) {
        log.verdict = await audit.refuse(
          {
            kind: 'model',
            action: { type: 'model', ...(call.model === undefined ? {} : { model: call.model }) },
            extra: { provider: vendor.provider, malformed: call.why },
          },
          'malformed_action',
          'SIDECAR_ERR_REQUEST_MALFORMED',
        );
        return fail(log.verdict.errorCode ?? 'SIDECAR_ERR_REQUEST_MALFORMED', log.verdict);
      }
      const { body, model } = call;
      log.model = model;
      const stream = body['stream'] === true;
      log.stream = stream;

      const policy = policies.current;
      const tools = vendor.filterTools(body, (name) => policy.mayExposeTool(name), config.toolsMode);
      log.toolsRemoved = tools.before.length - tools.after.length;
      const action = { type: 'model', model };
      const extra = {
        provider: vendor.provider,
        tools_before: tools.before,
        tools_after: tools.after,
        stream,
      };
      if (tools.refusal) {
        // A tool_choice that forces a removed tool is a 400, as the API itself answers for a tool it was not given.
        const code =
          tools.refusal === 'tool_choice_forbidden_tool'
            ? 'SIDECAR_ERR_REQUEST_MALFORMED'
            : 'SIDECAR_ERR_POLICY_DENIED';
        log.verdict = await audit.refuse({ kind: 'model', action, extra }, tools.refusal, code);
        return fail(log.verdict.errorCode ?? code, log.verdict);
      }
      // Under a budget the price table must cover what the call costs. A feature the vendor bills at other rates or
      // with fees of its own (fast mode, priority, web search, ...) cannot be reserved or charged: the request is
      // refused before anything is reserved or sent. Without a budget it passes, and its recorded cost can be low.
      const feature =
        policy.budgets.length > 0 ? vendor.unpricedFeature(tools.body ?? body, req.headers) : undefined;
      if (feature !== undefined) {
        log.verdict = await audit.refuse(
          { kind: 'model', action, extra: { ...extra, feature } },
          'unpriced_feature',
          'SIDECAR_ERR_REQUEST_MALFORMED',
        );
        return fail(log.verdict.errorCode ?? 'SIDECAR_ERR_REQUEST_MALFORMED', log.verdict);
      }
      if (up.key === undefined) {
        log.verdict = await audit.refuse(
          { kind: 'model', action, extra },
          'model_key_missing',
          'SIDECAR_ERR_UPSTREAM_UNREACHABLE',
        );
        return fail(log.verdict.errorCode ?? 'SIDECAR_ERR_UPSTREAM_UNREACHABLE', log.verdict, false);
      }

      // The decision is audited before anything goes upstream (fail closed).
      log.verdict = await audit.decide({ kind: 'model', action, extra, signal: abort.signal });
      if (log.verdict.effect === 'DENY') {
        return fail(log.verdict.errorCode ?? 'SIDECAR_ERR_POLICY_DENIED', log.verdict);
      }
      if (abort.signal.aborted) {
        log.reason = 'client_gone';
        return;
      }
      if (closing) return fail('SIDECAR_ERR_SHUTTING_DOWN', log.verdict);
      // Tools and budgets below come from `policy`. A reload while the call was decided (during an approval wait,
      // say) may have changed either: the call is refused rather than sent under rules no longer in force.
      if (log.verdict.policyDigest !== policy.digest) {
        log.verdict = await audit.refuse({ kind: 'model', action, extra }, REASONS.policyChanged);
        return fail(log.verdict.errorCode ?? 'SIDECAR_ERR_POLICY_DENIED', log.verdict);
      }
      const verdict = log.verdict;

      const budgets: readonly BudgetInfo[] = policy.budgets;
      const prepared = vendor.prepare(tools.body ?? body, {
        defaultMaxTokens: config.defaultMaxTokens,
        capOutput: budgets.length > 0,
      });
      const changed = prepared.body ?? tools.body;
      const payload = changed ? Buffer.from(JSON.stringify(changed)) : raw.body;
      const inputEstimate = Math.ceil(payload.length / 4) + prepared.mediaItems * MEDIA_ITEM_TOKENS;
      const estimate = {
        tokens: inputEstimate + prepared.maxOutputTokens,
        usd: prices.ceiling(model, inputEstimate, prepared.maxOutputTokens),
      };
      const reserved = ledger.reserve(budgets, estimate);
      if (!reserved.ok) {
        log.verdict = await audit.refuse(
          { kind: 'model', action, extra: { ...extra, budget: reserved.budget, estimate } },
          reserved.reason,
          'SIDECAR_ERR_BUDGET_EXCEEDED',
        );
        return fail(log.verdict.errorCode ?? 'SIDECAR_ERR_BUDGET_EXCEEDED', log.verdict);
      }
      reservation = reserved.reservation;
      log.reserved = estimate;

      const anomalies: Array<Promise<unknown>> = [];
      const reported = new Set<string>();
      const onToolCall = (tool: string) => {
        if (reported.has(tool) || policy.mayExposeTool(tool)) return;
        reported.add(tool);
        // The response still passes: the call itself is refused at the tool gateway. This records that it was asked.
        anomalies.push(
          audit.refuse(
            {
              kind: 'model',
              action: { type: 'tool_call', tool },
              extra: {
                anomaly: 'model_requested_forbidden_tool',
                model,
                provider: vendor.provider,
                request: verdict.decisionId,
              },
            },
            'model_tool_anomaly',
          ),
        );
      };

      const outcome = await forwardCall({ logger, metrics: opts.parts.metrics }, up, req, res, {
        key: up.key,
        path: up.basePath + vendor.path + query,
        payload,
        injectedUsageChunk: prepared.injectedUsageChunk,
        verdict,
        signal: abort.signal,
        onToolCall,
      });
      log.status = outcome.status;
      if (outcome.errorCode) log.errorCode = outcome.errorCode;
      if (outcome.upstreamError) log.upstreamError = outcome.upstreamError;
      if (outcome.reason) log.reason = outcome.reason;
      if (outcome.usage) {
        log.usage = outcome.usage;
        log.costUsd = costOf(model, outcome.usage);
        settle({ kind: 'usage', model, usage: outcome.usage, usd: log.costUsd });
        count(vendor.provider, outcome.usage, log.costUsd);
      } else if (outcome.billed) {
        settle({ kind: 'charge_reserved', model });
      }
      settle({ kind: 'release' });
      metrics.calls.inc({ provider: vendor.provider, outcome: outcome.kind });
      // Every call that was charged gets its usage record, including one cut short (the agent left, shutdown, an
      // upstream failure after the send): the audit's cost must add up to the spend file's.
      if (outcome.kind === 'forwarded' || outcome.billed || outcome.usage) {
        recordUsage({
          kind: 'model',
          action,
          extra: {
            provider: vendor.provider,
            request: verdict.decisionId,
            outcome: outcome.kind,
            status: outcome.status,
            stream,
            usage: outcome.usage ?? null,
            cost_usd: log.costUsd ?? null,
            settlement: log.settlement,
          },
        });
      }
      if (anomalies.length > 0) await Promise.all(anomalies);
    } finally {
      // Whatever happened above, a reservation never outlives its call.
      settle({ kind: 'release' });
      inflight.delete(abort);
      logLine(log, started);
    }
  }

  function count(provider: Provider, u: TokenUsage, usd: number | null): void {
    metrics.tokens.inc({ provider, kind: 'input' }, u.input_tokens);
    metrics.tokens.inc({ provider, kind: 'output' }, u.output_tokens);
    metrics.tokens.inc({ provider, kind: 'cache_write' }, u.cache_creation_input_tokens);
    metrics.tokens.inc({ provider, kind: 'cache_read' }, u.cache_read_input_tokens);
    if (usd !== null) metrics.cost.inc({ provider }, usd);
  }

  const routes: MountedRoute[] = VENDORS.map((vendor) => {
    const up = upstreams.get(vendor.provider) as Upstream;
    return {
      prefix: vendor.prefix,
      handle(req: IncomingMessage, res: ServerResponse): void {
        req.on('error', () => {});
        res.on('error', () => {});
        if (closing) {
          req.resume();
          sendVendorError(res, vendor, 'SIDECAR_ERR_SHUTTING_DOWN');
          return;
        }
        const task = handle(up, req, res)
          .catch((err: unknown) => {
            logger.error({ err: (err as Error).message, provider: vendor.provider }, 'model call failed');
            sendVendorError(res, vendor, 'SIDECAR_ERR_INTERNAL');
          })
          .finally(() => running.delete(task));
        running.add(task);
      },
    };
  });

  let closed: Promise<void> | undefined;
  const gateway: ModelGateway = {
    routes,
    spend(): SpendSnapshot {
      const policy = policies.current;
      return {
        agent,
        budgets: ledger.budgets(policy.budgets).map((b) => ({
          name: b.name,
          period: b.period,
          period_key: b.key,
          max_tokens: b.maxTokens ?? null,
          max_usd: b.maxUsd ?? null,
          spent_tokens: b.spent_tokens,
          spent_usd: b.spent_usd,
          reserved_tokens: b.reserved_tokens,
          reserved_usd: b.reserved_usd,
        })),
        models: ledger.state().models,
      };
    },
    close() {
      closed ??= (async () => {
        closing = true;
        for (const abort of inflight) abort.abort();
        await Promise.allSettled([...running]);
        clearTimeout(usageTimer);
        flushUsageRecords();
        await Promise.allSettled([...recording]);
        await writer?.flush();
        await Promise.all([...upstreams.values()].map((u) => u.pool.destroy().catch(() => {})));
      })();
      return closed;
    },
  };
  opts.parts.onClose?.(() => gateway.close());
  return gateway;
}

function splitTarget(target: string): [string, string] {
  const q = target.indexOf('?');
  return q < 0 ? [target, ''] : [target.slice(0, q), target.slice(q)];
}
