// The model gateway's section of the sidecar configuration: its schema, its defaults, and loading it from a file.
import { z } from 'zod';
import { SidecarError } from '../errors.ts';

const upstreamUrl = z.string().refine((v) => {
  try {
    const u = new URL(v);
    return (
      (u.protocol === 'http:' || u.protocol === 'https:') &&
      !u.username &&
      !u.password &&
      !u.search &&
      !u.hash
    );
  } catch {
    return false;
  }
}, 'must be an http(s) URL without credentials, query or fragment');

const providerSchema = z.strictObject({
  upstream: upstreamUrl.optional().describe('Base URL of the vendor API (a path prefix is kept).'),
  api_key_file: z
    .string()
    .min(1)
    .optional()
    .describe(
      "File holding the real API key (relative: to the config file's directory); wins over api_key_env.",
    ),
  api_key_env: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name')
    .optional()
    .describe("Environment variable of the sidecar's own process holding the key."),
});

const priceSchema = z.strictObject({
  input_per_mtok: z.number().nonnegative(),
  output_per_mtok: z.number().nonnegative(),
  cache_write_per_mtok: z.number().nonnegative().optional(),
  cache_read_per_mtok: z.number().nonnegative().optional(),
});

const ms = z.number().int().positive();

export const modelConfigSchema = z.strictObject({
  anthropic: providerSchema.optional(),
  openai: providerSchema.optional(),
  tools_mode: z
    .enum(['strip', 'reject'])
    .optional()
    .describe(
      'Tools the policy never allows: removed from the request (strip) or the request refused (reject).',
    ),
  prices: z
    .record(z.string().min(1), priceSchema)
    .optional()
    .describe('USD per million tokens by model name; a key ending in * is a prefix.'),
  default_max_tokens: z
    .number()
    .int()
    .positive()
    .optional()
    .describe('Output limit assumed when a request names none.'),
  spend_file: z
    .string()
    .min(1)
    .optional()
    .describe(
      "Default: <audit dir>/<agent>.spend.json; a relative path is relative to the config file's directory.",
    ),
  max_request_bytes: z.number().int().positive().optional(),
  timeouts: z
    .strictObject({
      connect_ms: ms.optional(),
      headers_ms: ms
        .optional()
        .describe('Until the upstream sends response headers (non-streamed calls wait here).'),
      body_ms: ms.optional().describe('Longest silence between two pieces of the response body.'),
    })
    .optional(),
});

export type ModelConfig = z.infer<typeof modelConfigSchema>;

export interface ProviderConfig {
  /** Undefined: the vendor's public API. */
  readonly upstream: string | undefined;
  readonly apiKeyFile: string | undefined;
  /** Undefined: the vendor's usual variable (ANTHROPIC_API_KEY, OPENAI_API_KEY). */
  readonly apiKeyEnv: string | undefined;
}

/** The configuration with every default applied, frozen. */
export interface ResolvedModelConfig {
  readonly anthropic: ProviderConfig;
  readonly openai: ProviderConfig;
  readonly toolsMode: 'strip' | 'reject';
  readonly prices: Readonly<Record<string, z.infer<typeof priceSchema>>>;
  readonly defaultMaxTokens: number;
  readonly spendFile: string | undefined;
  readonly maxRequestBytes: number;
  readonly timeouts: { readonly connectMs: number; readonly headersMs: number; readonly bodyMs: number };
}

export const MODEL_DEFAULTS = Object.freeze({
  toolsMode: 'strip',
  defaultMaxTokens: 4096,
  // The Messages API's own limit.
  maxRequestBytes: 32 * 1024 * 1024,
  connectMs: 10_000,
  // A long non-streamed answer sends nothing until it is complete.
  headersMs: 600_000,
  bodyMs: 300_000,
} as const);

/** Validates (throwing SIDECAR_ERR_CONFIG_INVALID with every problem) and applies defaults. */
export function resolveModelConfig(input: unknown): ResolvedModelConfig {
  const parsed = modelConfigSchema.safeParse(input ?? {});
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `model.${i.path.join('.')}: ${i.message}`);
    throw new SidecarError('SIDECAR_ERR_CONFIG_INVALID', problems.join('\n'));
  }
  const c = parsed.data;
  const provider = (p: z.infer<typeof providerSchema> | undefined): ProviderConfig =>
    Object.freeze({ upstream: p?.upstream, apiKeyFile: p?.api_key_file, apiKeyEnv: p?.api_key_env });
  return Object.freeze({
    anthropic: provider(c.anthropic),
    openai: provider(c.openai),
    toolsMode: c.tools_mode ?? MODEL_DEFAULTS.toolsMode,
    prices: Object.freeze({ ...c.prices }),
    defaultMaxTokens: c.default_max_tokens ?? MODEL_DEFAULTS.defaultMaxTokens,
    spendFile: c.spend_file,
    maxRequestBytes: c.max_request_bytes ?? MODEL_DEFAULTS.maxRequestBytes,
    timeouts: Object.freeze({
      connectMs: c.timeouts?.connect_ms ?? MODEL_DEFAULTS.connectMs,
      headersMs: c.timeouts?.headers_ms ?? MODEL_DEFAULTS.headersMs,
      bodyMs: c.timeouts?.body_ms ?? MODEL_DEFAULTS.bodyMs,
    }),
  });
}
