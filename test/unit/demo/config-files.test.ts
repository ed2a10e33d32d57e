// The sidecar config files of the compose stacks and the demo: valid, one per role with only the name changed, and
// the demo's variants differing from the stack's exactly where they claim to.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { DEMO_AUDIENCE, DEMO_ISSUER } from '../../../agents/router/issuer.ts';
import { HELPDESK_ROLES } from '../../../agents/router/users.ts';
import { loadSidecarConfigFile } from '../../../sidecar/config-file.ts';

const CONFIG = join(import.meta.dirname, '../../../compose/config');
const VARIANTS = {
  stack: (role: string) => join(CONFIG, `${role}.sidecar.yaml`),
  demo: (role: string) => join(CONFIG, 'demo', `${role}.sidecar.yaml`),
  anthropic: (role: string) => join(CONFIG, 'demo', `${role}.anthropic.sidecar.yaml`),
} as const;

const yamlOf = async (file: string) => parse(await readFile(file, 'utf8')) as Record<string, unknown>;

describe.each(Object.entries(VARIANTS))('compose/config %s variant', (_name, fileOf) => {
  it.each(HELPDESK_ROLES)('%s: loads with the sidecar’s own schema', async (role) => {
    const config = await loadSidecarConfigFile(fileOf(role));
    expect(config.mcp?.context.key_file).toBe(`/var/lib/agent-sidecar/identity/${role}.private.jwk.json`);
  });

  it('is one file with the role name replaced', async () => {
    const basic = await readFile(fileOf('basic-user'), 'utf8');
    for (const role of HELPDESK_ROLES) {
      expect(await readFile(fileOf(role), 'utf8'), role).toBe(basic.replaceAll('basic-user', role));
    }
  });
});

describe('the demo variants', () => {
  it.each(HELPDESK_ROLES)(
    '%s: the demo adds required end-user identity for the router’s tokens',
    async (role) => {
      const stack = await yamlOf(VARIANTS.stack(role));
      const { identity, ...rest } = await yamlOf(VARIANTS.demo(role));
      expect(rest).toEqual(stack);
      expect(stack['identity']).toBeUndefined();
      expect(identity).toEqual({
        required: true,
        jwks_file: '/etc/agent-sidecar/issuer/jwks.json',
        issuer: DEMO_ISSUER,
        audience: DEMO_AUDIENCE,
      });
    },
  );

  it.each(HELPDESK_ROLES)(
    '%s: the real-API variant changes only the model upstream and key',
    async (role) => {
      const demo = await yamlOf(VARIANTS.demo(role));
      const real = await yamlOf(VARIANTS.anthropic(role));
      const model = (c: Record<string, unknown>) => c['model'] as Record<string, unknown>;
      expect(model(real)['anthropic']).toEqual({
        upstream: 'https://api.anthropic.com',
        api_key_env: 'ANTHROPIC_API_KEY',
      });
      expect(model(demo)['anthropic']).toEqual({
        upstream: 'http://model-stub:8080',
        api_key_file: '/var/lib/agent-sidecar/model/api-key',
      });
      const strip = (c: Record<string, unknown>) => ({ ...c, model: { ...model(c), anthropic: null } });
      expect(strip(real)).toEqual(strip(demo));
    },
  );
});
