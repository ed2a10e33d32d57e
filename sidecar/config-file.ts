// The sidecar's config file: gateway settings (model, MCP, end-user identity) in one YAML file, validated by one schema.
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { SidecarError } from './errors.ts';
import { identityConfigSchema } from './identity/end-user.ts';
import { modelConfigSchema } from './model/config.ts';
import { formatDiagnostic, parseYamlWithSchema } from './policy/load.ts';
import { mcpConfigSchema } from './tools/config.ts';

export const sidecarConfigSchema = z.strictObject({
  model: modelConfigSchema.optional().describe('Model gateway on /anthropic and /openai.'),
  mcp: mcpConfigSchema.optional().describe('MCP tool gateway on /mcp; off when absent.'),
  identity: identityConfigSchema.optional().describe('End-user tokens: verification and misrouting defence.'),
});
export type SidecarConfigFile = z.infer<typeof sidecarConfigSchema>;

/** Reads and validates the config file; every problem is reported as `file:line:col: message`. */
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
  return parsed.document;
}
