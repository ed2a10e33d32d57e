// The sidecar's config file as a whole: sections that only work together, and file paths written relative to it.
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  CONFIG_PATH_FIELDS,
  loadSidecarConfigFile,
  sidecarConfigSchema,
} from '../../../sidecar/config-file.ts';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'sidecar-config-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const MCP =
  'mcp:\n  upstreams:\n    - { name: tools, url: "http://127.0.0.1:9/mcp" }\n  context:\n    key_file: /k.json\n';
const IDENTITY = 'identity:\n  required: true\n  jwks_file: /jwks.json\n  audience: agents\n';
// The message names the section it needs; the rest is prose an operator reads, not a contract.
const NEEDS_MCP = /identity: applies to the MCP tool gateway.*`mcp` section/;

async function load(text: string, name = 'sidecar.yaml') {
  const file = join(dir, name);
  await writeFile(file, text);
  return loadSidecarConfigFile(file);
}

describe('identity needs the MCP gateway', () => {
  const refused: Array<{ note: string; text: string; at: string; also?: RegExp }> = [
    { note: 'block section, first key', text: IDENTITY, at: '1:1' },
    { note: 'block section after model', text: `model:\n  tools_mode: strip\n${IDENTITY}`, at: '3:1' },
    { note: 'after comments and blank lines', text: `# gateways\n\n${IDENTITY}`, at: '3:1' },
    // A section on its key's own line is reported at its value, as every policy diagnostic is.
    {
      note: 'flow section',
      text: 'identity: { required: true, jwks_file: /j.json, audience: a }\n',
      at: '1:11',
    },
    { note: 'flow document', text: '{ model: {}, identity: { required: false } }\n', at: '1:24' },
    { note: 'after a byte order mark', text: `\ufeff${IDENTITY}`, at: '1:1' },
    {
      note: 'an invalid identity section: both problems at once',
      text: 'identity:\n  required: true\n',
      at: '1:1',
      also: /:2:3: identity\.audience: is required$/,
    },
    { note: 'an empty identity key', text: 'model: {}\nidentity:\n', at: '2:1' },
  ];

  it.each(refused)('refuses identity without mcp: $note', async ({ text, at, also }) => {
    const err = await load(text).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'SIDECAR_ERR_CONFIG_INVALID' });
    const lines = (err as Error).message.split('\n');
    const ours = lines.filter((l) => NEEDS_MCP.test(l));
    expect(ours).toEqual([expect.stringMatching(new RegExp(`^${join(dir, 'sidecar.yaml')}:${at}: `))]);
    if (also) expect(lines.some((l) => also.test(l))).toBe(true);
  });

  const accepted: Array<{ note: string; text: string; identity: boolean }> = [
    { note: 'identity with mcp', text: `${MCP}${IDENTITY}`, identity: true },
    { note: 'identity before mcp', text: `${IDENTITY}${MCP}`, identity: true },
    { note: 'mcp alone', text: MCP, identity: false },
    { note: 'model alone', text: 'model:\n  tools_mode: reject\n', identity: false },
    { note: 'an empty document mapping', text: '{}\n', identity: false },
  ];

  it.each(accepted)('accepts $note', async ({ text, identity }) => {
    const c = await load(text);
    expect(c.identity !== undefined).toBe(identity);
  });

  it('does not blame identity when the mcp section is there but invalid', async () => {
    const err = await load(`${IDENTITY}mcp:\n  upstreams: []\n  context: { key_file: /k }\n`).catch((e) => e);
    expect(err).toMatchObject({ code: 'SIDECAR_ERR_CONFIG_INVALID' });
    expect((err as Error).message).toMatch(/mcp\.upstreams/);
    expect((err as Error).message).not.toMatch(NEEDS_MCP);
  });

  it('the schema itself refuses it, for callers that validate without the file loader', () => {
    const r = sidecarConfigSchema.safeParse({ identity: { required: true, jwks_file: '/j', audience: 'a' } });
    expect(r.success).toBe(false);
    expect(r.error?.issues).toEqual([expect.objectContaining({ path: ['identity'] })]);
  });
});

describe('relative file paths resolve against the config file', () => {
  // A document with every path field set to an absolute placeholder; one case overrides one field.
  const document = (field: readonly string[], value: string): string => {
    const v = (f: string, fallback: string) => JSON.stringify(field.join('.') === f ? value : fallback);
    return [
      'model:',
      `  anthropic: { api_key_file: ${v('model.anthropic.api_key_file', '/abs/anthropic')} }`,
      `  openai: { api_key_file: ${v('model.openai.api_key_file', '/abs/openai')} }`,
      `  spend_file: ${v('model.spend_file', '/abs/spend.json')}`,
      'mcp:',
      '  upstreams: [{ name: tools, url: "http://127.0.0.1:9/mcp" }]',
      `  context: { key_file: ${v('mcp.context.key_file', '/abs/key.json')} }`,
      'identity:',
      `  { required: true, audience: a, jwks_file: ${v('identity.jwks_file', '/abs/jwks.json')} }`,
      '',
    ].join('\n');
  };
  const getIn = (o: unknown, path: readonly string[]) =>
    path.reduce<unknown>((cur, k) => (cur as Record<string, unknown> | undefined)?.[k], o);

  // `expected` gets the config file's directory. Absolute values come back byte for byte, even unnormalised.
  const kinds: Array<{ kind: string; value: string; expected: (configDir: string) => string }> = [
    { kind: 'bare relative', value: 'secrets/key', expected: (d) => join(d, 'secrets/key') },
    { kind: './ relative', value: './key', expected: (d) => join(d, 'key') },
    { kind: '../ relative', value: '../shared/key', expected: (d) => join(dirname(d), 'shared/key') },
    { kind: 'absolute', value: '/run/secrets/key', expected: () => '/run/secrets/key' },
    { kind: 'absolute, unnormalised', value: '/run//secrets/../key', expected: () => '/run//secrets/../key' },
  ];
  const cases = CONFIG_PATH_FIELDS.flatMap((field) =>
    kinds.map((k) => ({ ...k, field, name: field.join('.') })),
  );

  it.each(cases)('$name, $kind', async ({ field, value, expected }) => {
    const configDir = join(dir, 'etc', 'sidecar');
    await mkdir(configDir, { recursive: true });
    const file = join(configDir, 'sidecar.yaml');
    await writeFile(file, document(field, value));
    const c = await loadSidecarConfigFile(file);
    expect(getIn(c, field)).toBe(expected(configDir));
    // The other fields were absolute and stay exactly as written.
    for (const other of CONFIG_PATH_FIELDS.filter((f) => f !== field)) {
      expect(getIn(c, other)).toMatch(/^\/abs\//);
    }
  });

  it('a config file named relative to the working directory still yields absolute paths under its directory', async () => {
    const configDir = join(dir, 'conf');
    await mkdir(configDir);
    const file = join(configDir, 'sidecar.yaml');
    await writeFile(file, document(['mcp', 'context', 'key_file'], 'keys/admin.private.jwk.json'));
    const c = await loadSidecarConfigFile(relative(process.cwd(), file));
    expect(c.mcp?.context.key_file).toBe(join(configDir, 'keys/admin.private.jwk.json'));
  });

  it('lists every field that names a file (a new *_file field must be resolved too)', () => {
    // Generating the JSON Schema also proves the refinements did not make the schema unrepresentable.
    const json = z.toJSONSchema(sidecarConfigSchema) as Record<string, unknown>;
    const found: string[] = [];
    const walk = (node: unknown, path: string[]) => {
      if (node === null || typeof node !== 'object') return;
      const n = node as { properties?: Record<string, unknown>; items?: unknown };
      for (const [key, child] of Object.entries(n.properties ?? {})) {
        if (/_(file|dir|path)$/.test(key)) found.push([...path, key].join('.'));
        walk(child, [...path, key]);
      }
      if (n.items !== undefined) walk(n.items, [...path, '*']);
    };
    walk(json, []);
    expect(found.sort()).toEqual(CONFIG_PATH_FIELDS.map((f) => f.join('.')).sort());
  });
});
