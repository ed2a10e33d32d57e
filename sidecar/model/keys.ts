// Loads the real vendor API keys from the sidecar's own secret files or environment; the agent never supplies them.
import { readFile } from 'node:fs/promises';
import { SidecarError } from '../errors.ts';
import type { ProviderConfig } from './config.ts';

// Visible ASCII only: anything else would be refused as a header value, or smuggle a second header.
const KEY_CHARS = /^[\x21-\x7e]+$/;

/**
 * The key for one provider, or undefined when none is configured (that provider's calls are then refused).
 * A configured key file that cannot be read, or a key with characters no header may carry, stops the sidecar.
 */
export async function loadApiKey(
  provider: ProviderConfig,
  defaultEnv: string,
  env: Readonly<Record<string, string | undefined>>,
): Promise<string | undefined> {
  let key: string | undefined;
  let source: string;
  if (provider.apiKeyFile !== undefined) {
    source = provider.apiKeyFile;
    try {
      key = (await readFile(provider.apiKeyFile, 'utf8')).trim();
    } catch (err) {
      throw new SidecarError(
        'SIDECAR_ERR_CONFIG_INVALID',
        `${source}: cannot read the API key file (${(err as NodeJS.ErrnoException).code ?? 'EIO'})`,
      );
    }
    if (key === '')
      throw new SidecarError('SIDECAR_ERR_CONFIG_INVALID', `${source}: the API key file is empty`);
  } else {
    source = `$${provider.apiKeyEnv ?? defaultEnv}`;
    key = env[provider.apiKeyEnv ?? defaultEnv]?.trim() || undefined;
  }
  // The message names where the key came from, never the key.
  if (key !== undefined && !KEY_CHARS.test(key)) {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `${source}: the API key contains characters a header cannot carry`,
    );
  }
  return key;
}
