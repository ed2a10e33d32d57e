// The demo's compose files as files: one per-role block with only the name changed, the router the only thing with a
// published port (on loopback), and the agents given nothing secret.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { HELPDESK_ROLES } from '../../../agents/router/users.ts';

const COMPOSE = join(import.meta.dirname, '../../../compose');
type Service = Record<string, unknown>;
const load = async (file: string) =>
  parse(await readFile(join(COMPOSE, file), 'utf8')) as {
    services: Record<string, Service>;
    networks?: Record<string, unknown>;
    include?: unknown;
  };

/** A service's definition as text with its role's name replaced by basic-user's. */
const asBasicUser = (service: Service, role: string) =>
  JSON.stringify(service).replaceAll(role, 'basic-user');

describe('compose/demo.roles.yaml', () => {
  it('gives every role the same changes, with only the role name replaced', async () => {
    const { services } = await load('demo.roles.yaml');
    for (const suffix of ['sidecar', 'agent']) {
      const basic = JSON.stringify(services[`basic-user-${suffix}`]);
      for (const role of HELPDESK_ROLES) {
        expect(asBasicUser(services[`${role}-${suffix}`]!, role), `${role}-${suffix}`).toBe(basic);
      }
    }
  });

  it('runs the helpdesk agent with nothing secret and no mounts; the sidecar gets the demo config and the JWKS', async () => {
    const { services } = await load('demo.roles.yaml');
    for (const role of HELPDESK_ROLES) {
      const agent = services[`${role}-agent`]!;
      expect(agent['image']).toBe('agent-sidecar-helpdesk-agent:local');
      expect(agent['volumes']).toBeUndefined();
      const env = agent['environment'] as Record<string, string>;
      expect(Object.keys(env).filter((k) => /token|key|secret|password|credential/i.test(k))).toEqual([]);
      const sidecar = services[`${role}-sidecar`]!;
      expect(sidecar['volumes']).toEqual([
        `./config/demo/${role}.sidecar.yaml:/etc/agent-sidecar/sidecar.yaml:ro`,
        'issuer-jwks:/etc/agent-sidecar/issuer:ro',
      ]);
      expect((sidecar['environment'] as Record<string, string>)['LOCKDOWN_AGENT_INBOUND_TCP_PORTS']).toBe(
        '8088',
      );
    }
    expect(services['issuer-keys']).toMatchObject({
      network_mode: 'none',
      cap_drop: ['ALL'],
      read_only: true,
    });
  });
});

describe('compose/demo.yaml', () => {
  it('includes the role stacks with the demo changes and publishes only the router, on loopback', async () => {
    const demo = await load('demo.yaml');
    expect(demo.include).toEqual([{ path: ['helpdesk.yaml', 'demo.roles.yaml'] }]);
    expect(Object.keys(demo.services)).toEqual(['router']);
    const router = demo.services['router']!;
    // Compose interpolates ROUTER_PORT (default 8000); the address is always loopback.
    expect(router['ports']).toEqual([`127.0.0.1:\${ROUTER_PORT:-8000}:8000`]);
    expect(router['networks']).toEqual(['ingress', ...HELPDESK_ROLES]);
    expect(router['volumes']).toEqual(['issuer-private:/var/lib/router/issuer:ro']);
    expect(demo.networks).toEqual({ ingress: {} });
  });
});

describe('compose/demo.anthropic.yaml', () => {
  it('gives only the sidecars the key, the real-API config and a way out', async () => {
    const { services } = await load('demo.anthropic.yaml');
    expect(Object.keys(services).sort()).toEqual(HELPDESK_ROLES.map((r) => `${r}-sidecar`).sort());
    const basic = JSON.stringify(services['basic-user-sidecar']);
    for (const role of HELPDESK_ROLES) {
      const sidecar = services[`${role}-sidecar`]!;
      expect(asBasicUser(sidecar, role)).toBe(basic);
      expect(sidecar['networks']).toEqual([role, `${role}-egress`]);
      expect(sidecar['volumes']).toEqual([
        `./config/demo/${role}.anthropic.sidecar.yaml:/etc/agent-sidecar/sidecar.yaml:ro`,
      ]);
    }
  });

  it('declares one egress network per role, not internal', async () => {
    const { networks } = await load('demo.anthropic.yaml');
    expect(networks).toEqual(Object.fromEntries(HELPDESK_ROLES.map((r) => [`${r}-egress`, {}])));
  });

  // Each agent shares its sidecar's network namespace, so a network two roles' sidecars share would let one role's
  // namespace reach the other's sidecar and agent. Merged as compose merges a service's networks: the union.
  const mergedNetworks = async (role: string) => {
    const base = (await load(`stacks/${role}.yaml`)).services[`${role}-sidecar`]!['networks'] as string[];
    const overlay = (await load('demo.anthropic.yaml')).services[`${role}-sidecar`]!['networks'] as string[];
    return new Set([...base, ...overlay]);
  };
  const pairs = HELPDESK_ROLES.flatMap((a, i) => HELPDESK_ROLES.slice(i + 1).map((b) => [a, b] as const));
  it.each(pairs)('gives the %s and %s sidecars no network in common', async (a, b) => {
    const [netsA, netsB] = [await mergedNetworks(a), await mergedNetworks(b)];
    expect([...netsA].filter((n) => netsB.has(n))).toEqual([]);
  });
});
