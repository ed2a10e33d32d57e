// The `mcp` section of the sidecar's config file: upstream tool servers, context-token signing, message limits.
import { z } from 'zod';
import { SidecarError } from '../errors.ts';
import { DEFAULT_CONTEXT_AUDIENCE } from '../identity/context-token.ts';

/** Upstream names and namespaces: short identifiers; a namespace may not contain '.', so `ns.tool` splits once. */
const IDENTIFIER = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
// Field values: visible ASCII, space and tab; no CR/LF, so a value cannot smuggle a second header.
const HEADER_VALUE = /^[\t\x20-\x7e]*$/;
/** Headers the gateway itself sets on upstream requests: an operator-configured copy would override them. */
export const RESERVED_UPSTREAM_HEADERS = new Set([
  'x-agent-context',
  'mcp-session-id',
  'mcp-protocol-version',
  'content-type',
  'content-length',
  'accept',
  'host',
  'connection',
  'transfer-encoding',
  'last-event-id',
]);

export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;
export const DEFAULT_UPSTREAM_TIMEOUT_MS = 30_000;
export const DEFAULT_STARTUP_TIMEOUT_MS = 10_000;

const httpUrl = z
  .string()
  .url()
  .refine((v) => {
    const u = new URL(v);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.username === '' && u.password === '';
  }, 'must be an http(s) URL without userinfo (put credentials in `headers`)');

const upstreamSchema = z.strictObject({
  name: z.string().regex(IDENTIFIER, 'must be an identifier ([A-Za-z0-9_-], at most 64)'),
  url: httpUrl,
  /** Credentials the sidecar holds for this upstream; the agent never sees them. */
  headers: z
    .record(
      z
        .string()
        .regex(HEADER_NAME, 'must be an HTTP header name')
        .refine((h) => !RESERVED_UPSTREAM_HEADERS.has(h.toLowerCase()), 'is set by the gateway itself'),
      z.string().regex(HEADER_VALUE, 'must be printable ASCII without line breaks'),
    )
    .optional(),
  /** Expose this upstream's tools as `<namespace>.<tool>`: resolves name collisions between upstreams. */
  namespace: z.string().regex(IDENTIFIER, 'must be an identifier ([A-Za-z0-9_-], no dots)').optional(),
  /** One request (initialize, tools/list, tools/call) to this upstream; default 30 s. */
  timeout_ms: z.number().int().min(1).max(600_000).optional(),
  /**
   * The `aud` of the context tokens minted for this upstream, which that tool server verifies them against;
   * default `context.audience`. mcpConfigSchema refuses two upstreams that would end up with the same one.
   */
  audience: z.string().min(1).optional(),
});

export const mcpConfigSchema = z
  .strictObject({
    upstreams: z.array(upstreamSchema).min(1, 'must list at least one upstream'),
    context: z.strictObject({
      /** This role's Ed25519 private JWK (`<role>.private.jwk.json`); relative: to the config file's directory. */
      key_file: z.string().min(1),
      audience: z.string().min(1).optional(),
      ttl_seconds: z.number().int().min(1).max(300).optional(),
    }),
    /** Largest JSON-RPC message accepted from the agent or from an upstream; default 1 MiB. */
    max_message_bytes: z
      .number()
      .int()
      .min(1024)
      .max(64 * 1024 * 1024)
      .optional(),
    /** How long startup waits for every upstream to answer initialize and tools/list; default 10 s. */
    startup_timeout_ms: z.number().int().min(1).max(600_000).optional(),
  })
  .superRefine((cfg, ctx) => {
    const seen = new Map<string, number>();
    const namespaces = new Map<string, number>();
    // One audience, one upstream. A token names only its audience and the upstream's own tool name, and an upstream
    // can serve tools it never listed (or list them after startup), so two upstreams sharing an audience could each
    // replay the other's tokens whatever their tool lists say.
    const audiences = new Map<string, string>();
    const fallback = contextAudience(cfg.context);
    cfg.upstreams.forEach((u, i) => {
      const audience = u.audience ?? fallback;
      const other = audiences.get(audience);
      if (other !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['upstreams', i, 'audience'],
          message: `upstreams "${other}" and "${u.name}" would both get context tokens for audience ${JSON.stringify(audience)}, so a token minted for one would be accepted by the other; set a distinct \`audience\` on each upstream (and have each tool server verify its own)`,
        });
      } else {
        audiences.set(audience, u.name);
      }
      if (seen.has(u.name)) {
        ctx.addIssue({
          code: 'custom',
          path: ['upstreams', i, 'name'],
          message: `duplicate upstream "${u.name}"`,
        });
      }
      seen.set(u.name, i);
      if (u.namespace !== undefined) {
        if (namespaces.has(u.namespace)) {
          ctx.addIssue({
            code: 'custom',
            path: ['upstreams', i, 'namespace'],
            message: `namespace "${u.namespace}" is used by another upstream`,
          });
        }
        namespaces.set(u.namespace, i);
      }
    });
  });

export type McpConfig = z.infer<typeof mcpConfigSchema>;
export type McpConfigInput = z.input<typeof mcpConfigSchema>;
export type UpstreamConfig = McpConfig['upstreams'][number];

/** The audience of the context tokens for an upstream without an `audience` of its own. */
export function contextAudience(context: Pick<McpConfig['context'], 'audience'>): string {
  return context.audience ?? DEFAULT_CONTEXT_AUDIENCE;
}

/** Validates an `mcp` section; problems become one SIDECAR_ERR_CONFIG_INVALID listing each path. */
export function parseMcpConfig(input: unknown, source = 'mcp'): McpConfig {
  const r = mcpConfigSchema.safeParse(input);
  if (!r.success) throw new SidecarError('SIDECAR_ERR_CONFIG_INVALID', formatIssues(source, r.error));
  return r.data;
}

export function formatIssues(source: string, error: z.ZodError): string {
  return error.issues.map((i) => `${[source, ...i.path.map(String)].join('.')}: ${i.message}`).join('\n');
}
