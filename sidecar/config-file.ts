// The sidecar's config file: gateway settings (model, MCP, end-user identity) in one YAML file, validated by one schema.
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { SidecarError } from './errors.ts';
import { identityConfigSchema } from './identity/end-user.ts';
import { modelConfigSchema } from './model/config.ts';
import { isPlainObject } from './policy/action.ts';
import { formatDiagnostic, parseYamlWithSchema } from './policy/load.ts';
import { mcpConfigSchema } from './tools/config.ts';

const IDENTITY_WITHOUT_MCP =
  'applies to the MCP tool gateway (/mcp) only, and there is no `mcp` section, so no end-user token would be verified anywhere; add an `mcp` section or remove `identity`';

export const sidecarConfigSchema = z
  .strictObject({
    model: modelConfigSchema.optional().describe('Model gateway on /anthropic and /openai.'),
    mcp: mcpConfigSchema.optional().describe('MCP tool gateway on /mcp; off when absent.'),
    identity: identityConfigSchema
      .optional()
      .describe(
        'End-user tokens for the MCP tool gateway: verification and misrouting defence; needs `mcp`.',
      ),
  })
  .superRefine(
    (c, ctx) => {
      // Only the MCP gateway verifies end-user tokens. An operator who wrote `identity` believes they are checked;
      // accepting it without `mcp` would silently check nothing (fail open).
      if (c.identity !== undefined && c.mcp === undefined)
        ctx.addIssue({ code: 'custom', path: ['identity'], message: IDENTITY_WITHOUT_MCP });
    },
    // Also when other parts of the file are invalid: every problem is reported in one go, not one per attempt.
    { when: (payload) => payload.value !== null && typeof payload.value === 'object' },
  );
export type SidecarConfigFile = z.infer<typeof sidecarConfigSchema>;

/**
 * Every field of the config file that names a file, as its key path. loadSidecarConfigFile resolves the relative
 * ones against the config file's directory; a test keeps this list in step with the schema's `*_file` fields.
 */
export const CONFIG_PATH_FIELDS: readonly (readonly string[])[] = [
  ['model', 'anthropic', 'api_key_file'],
  ['model', 'openai', 'api_key_file'],
  ['model', 'spend_file'],
  ['mcp', 'context', 'key_file'],
  ['identity', 'jwks_file'],
];

/**
 * Reads and validates the config file; every problem is reported as `file:line:col: message`. Relative file paths
 * in it are resolved against the file's own directory (absolute ones are kept as written), so the same file means
 * the same keys whatever directory the sidecar was started from.
 */
export async function loadSidecarConfigFile(path: string): Promise<SidecarConfigFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'EIO'})`,
    );
  }
  const parsed = parseYamlWithSchema(text, path, sidecarConfigSchema);
  if (!parsed.ok)
    throw new SidecarError('SIDECAR_ERR_CONFIG_INVALID', parsed.diagnostics.map(formatDiagnostic).join('\n'));
  return resolvePathFields(parsed.document, dirname(resolve(path)));
}

/**
 * Relative paths are taken relative to the config file's directory, as docker compose and nginx do, not to the
 * working directory, which depends on how the sidecar was started. The result is lexical (path.resolve). Absolute
 * paths are left exactly as written. The document is freshly parsed and owned here, so it is changed in place.
 */
function resolvePathFields(document: SidecarConfigFile, dir: string): SidecarConfigFile {
  for (const field of CONFIG_PATH_FIELDS) {
    const parent = field
      .slice(0, -1)
      .reduce<unknown>((cur, key) => (isPlainObject(cur) ? cur[key] : undefined), document);
    const key = field[field.length - 1] as string;
    if (!isPlainObject(parent)) continue;
    const value = parent[key];
    if (typeof value === 'string' && !isAbsolute(value)) parent[key] = resolve(dir, value);
  }
  return document;
}
