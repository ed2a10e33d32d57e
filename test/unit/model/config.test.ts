// The gateway's configuration section, the policy's `budgets` section, and where API keys come from.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadSidecarConfigFile } from '../../../sidecar/config-file.ts';
import { MODEL_DEFAULTS, resolveModelConfig } from '../../../sidecar/model/config.ts';
import { loadApiKey } from '../../../sidecar/model/keys.ts';
import { compilePolicy } from '../../../sidecar/policy/policy.ts';

let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'model-config-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('model config', () => {
  it('applies defaults to an empty section', () => {
    const c = resolveModelConfig(undefined);
    expect(c).toMatchObject({
      toolsMode: 'strip',
      defaultMaxTokens: MODEL_DEFAULTS.defaultMaxTokens,
      anthropic: { upstream: undefined, apiKeyEnv: undefined },
      timeouts: { connectMs: MODEL_DEFAULTS.connectMs },
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it.each([
    [{ tools_mode: 'drop' }, 'model.tools_mode'],
    [{ anthropic: { upstream: 'ftp://x' } }, 'model.anthropic.upstream'],
    [{ openai: { upstream: 'https://user:pw@api.openai.com' } }, 'model.openai.upstream'],
    [{ openai: { api_key_env: 'NOT-A-NAME' } }, 'model.openai.api_key_env'],
    [{ prices: { m: { input_per_mtok: -1, output_per_mtok: 1 } } }, 'model.prices.m.input_per_mtok'],
    [{ default_max_tokens: 0 }, 'model.default_max_tokens'],
    [{ surprise: true }, 'surprise'],
  ])('refuses %j', (input, where) => {
    expect(() => resolveModelConfig(input)).toThrow(
      expect.objectContaining({
        code: 'SIDECAR_ERR_CONFIG_INVALID',
        message: expect.stringContaining(where),
      }),
    );
  });

  it('loads as the model section of the config file, reporting problems with file:line:col', async () => {
    const dir = await mkdtemp(join(root, 'config-'));
    const good = join(dir, 'good.yaml');
    await writeFile(
      good,
      'model:\n  anthropic:\n    api_key_file: /run/secrets/anthropic\n  prices:\n    "claude-*": { input_per_mtok: 3, output_per_mtok: 15 }\n',
    );
    expect((await loadSidecarConfigFile(good)).model).toMatchObject({
      prices: { 'claude-*': { input_per_mtok: 3 } },
    });
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'model:\n  tools_mode: strip\n  timeouts:\n    headers_ms: -5\n');
    await expect(loadSidecarConfigFile(bad)).rejects.toMatchObject({
      message: expect.stringMatching(/bad\.yaml:4:\d+: model\.timeouts\.headers_ms/),
    });
  });
});

describe('policy budgets', () => {
  const policy = (budgets: string) => compilePolicy(`agent: a\nrules: []\nbudgets:\n${budgets}`, 'p.yaml');

  it('compiles budgets into the frozen policy', () => {
    const r = policy(
      '  - { name: daily, period: day, max_tokens: 1000 }\n  - { name: monthly, period: month, max_usd: 25.5 }\n',
    );
    if (!r.ok) throw new Error(r.diagnostics.map((d) => d.message).join('; '));
    expect(r.policy.budgets).toEqual([
      { name: 'daily', period: 'day', maxTokens: 1000 },
      { name: 'monthly', period: 'month', maxUsd: 25.5 },
    ]);
    expect(Object.isFrozen(r.policy.budgets[0])).toBe(true);
  });

  it('a policy without budgets has none', () => {
    const r = compilePolicy('agent: a\nrules: []\n', 'p.yaml');
    expect(r.ok && r.policy.budgets).toEqual([]);
  });

  it.each([
    ['  - { name: b, period: day }\n', 'a budget needs max_tokens or max_usd'],
    ['  - { name: b, period: week, max_tokens: 1 }\n', 'budgets[0].period'],
    ['  - { name: b, period: day, max_tokens: 1.5 }\n', 'budgets[0].max_tokens'],
    ['  - { name: b, period: day, max_usd: 0 }\n', 'budgets[0].max_usd'],
    ['  - { name: b, period: day, max_usd: 1, per: agent }\n', 'unknown key "per"'],
    [
      '  - { name: b, period: day, max_usd: 1 }\n  - { name: b, period: month, max_usd: 2 }\n',
      'duplicate budget name "b"',
    ],
  ])('refuses %j', (budgets, message) => {
    const r = policy(budgets);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.diagnostics.map((d) => d.message).join('\n')).toContain(message);
  });
});

describe('API keys', () => {
  const none = { upstream: undefined, apiKeyFile: undefined, apiKeyEnv: undefined };

  it('reads the vendor variable by default, a named one, or a file (which wins)', async () => {
    const dir = await mkdtemp(join(root, 'keys-'));
    const file = join(dir, 'key');
    await writeFile(file, 'sk-from-file\n', { mode: 0o600 });
    expect(await loadApiKey(none, 'ANTHROPIC_API_KEY', { ANTHROPIC_API_KEY: 'sk-env' })).toBe('sk-env');
    expect(await loadApiKey({ ...none, apiKeyEnv: 'MINE' }, 'ANTHROPIC_API_KEY', { MINE: ' sk-mine ' })).toBe(
      'sk-mine',
    );
    expect(await loadApiKey({ ...none, apiKeyFile: file, apiKeyEnv: 'MINE' }, 'X', { MINE: 'sk-mine' })).toBe(
      'sk-from-file',
    );
    expect(await loadApiKey(none, 'ANTHROPIC_API_KEY', {})).toBeUndefined();
  });

  it('refuses an unreadable key file, an empty one, and a key a header cannot carry, without quoting it', async () => {
    const dir = await mkdtemp(join(root, 'keys-'));
    const empty = join(dir, 'empty');
    await writeFile(empty, '\n');
    await expect(loadApiKey({ ...none, apiKeyFile: join(dir, 'missing') }, 'X', {})).rejects.toMatchObject({
      code: 'SIDECAR_ERR_CONFIG_INVALID',
    });
    await expect(loadApiKey({ ...none, apiKeyFile: empty }, 'X', {})).rejects.toMatchObject({
      code: 'SIDECAR_ERR_CONFIG_INVALID',
    });
    const bad = loadApiKey(none, 'X', { X: 'sk-secret\r\nx-evil: 1' });
    await expect(bad).rejects.toMatchObject({ code: 'SIDECAR_ERR_CONFIG_INVALID' });
    await expect(bad).rejects.not.toMatchObject({ message: expect.stringContaining('sk-secret') });
  });
});
