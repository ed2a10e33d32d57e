// The Kubernetes manifests (deploy/k8s): the security-relevant keys of the basic-user role's pod, its NetworkPolicy
// and its policy ConfigMap, read the way the API server reads them (YAML 1.1: `0444` is octal). No cluster needed.
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';

const ROOT = resolve(import.meta.dirname, '../../..');
const K8S = join(ROOT, 'deploy/k8s');

interface Manifest {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: {
    readonly name: string;
    readonly namespace?: string;
    readonly labels?: Record<string, string>;
  };
  readonly [key: string]: unknown;
}

interface SecurityContext {
  runAsUser?: number;
  runAsGroup?: number;
  runAsNonRoot?: boolean;
  allowPrivilegeEscalation?: boolean;
  readOnlyRootFilesystem?: boolean;
  privileged?: boolean;
  capabilities?: { drop?: string[]; add?: string[] };
  seccompProfile?: { type: string };
}

interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  restartPolicy?: string;
  env?: Array<{ name: string; value?: string; valueFrom?: unknown }>;
  envFrom?: unknown[];
  securityContext?: SecurityContext;
  startupProbe?: { exec?: { command: string[] } };
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
  resources?: { limits?: Record<string, string> };
}

interface PodSpec {
  automountServiceAccountToken?: boolean;
  enableServiceLinks?: boolean;
  hostNetwork?: boolean;
  hostPID?: boolean;
  hostIPC?: boolean;
  shareProcessNamespace?: boolean;
  securityContext?: SecurityContext & { fsGroup?: number; supplementalGroups?: number[] };
  initContainers?: Container[];
  containers: Container[];
  volumes?: Array<{ name: string; secret?: { defaultMode?: number }; configMap?: { items?: unknown[] } }>;
}

function loadAll(): Manifest[] {
  const out: Manifest[] = [];
  for (const dir of readdirSync(K8S)) {
    for (const file of readdirSync(join(K8S, dir)).filter((f) => f.endsWith('.yaml'))) {
      if (file === 'kustomization.yaml') continue;
      for (const doc of parseAllDocuments(readFileSync(join(K8S, dir, file), 'utf8'), { version: '1.1' })) {
        expect(doc.errors, `${dir}/${file}`).toEqual([]);
        out.push(doc.toJS() as Manifest);
      }
    }
  }
  return out;
}

const manifests = loadAll();
const find = (kind: string, name: string, namespace?: string): Manifest => {
  const m = manifests.find(
    (x) =>
      x.kind === kind &&
      x.metadata.name === name &&
      (namespace === undefined || x.metadata.namespace === namespace),
  );
  if (!m) throw new Error(`no ${kind} ${name}`);
  return m;
};
const podOf = (m: Manifest): PodSpec => (m['spec'] as { template: { spec: PodSpec } }).template.spec;
const workloads = manifests.filter((m) => ['Deployment', 'StatefulSet', 'DaemonSet', 'Job'].includes(m.kind));
const ROLE_NS = 'helpdesk-basic-user';
const statefulSet = find('StatefulSet', 'basic-user', ROLE_NS);
const pod = podOf(statefulSet);
const init = (name: string): Container => {
  const c = pod.initContainers?.find((x) => x.name === name);
  if (!c) throw new Error(`no init container ${name}`);
  return c;
};
const agent = pod.containers.find((c) => c.name === 'agent')!;

describe('every workload in deploy/k8s', () => {
  it('has manifests to check', () => {
    expect(workloads.map((w) => `${w.metadata.namespace}/${w.metadata.name}`).sort()).toEqual([
      'helpdesk-basic-user/basic-user',
      'helpdesk-shared/helpdesk-tools',
      'helpdesk-shared/model-stub',
      'helpdesk-shared/status-service',
    ]);
  });

  it.each(workloads.map((w) => [w.metadata.name, w] as const))('%s: pod-level isolation', (_, w) => {
    const spec = podOf(w);
    expect(spec.automountServiceAccountToken).toBe(false);
    expect(spec.enableServiceLinks).toBe(false);
    for (const hostKey of ['hostNetwork', 'hostPID', 'hostIPC', 'shareProcessNamespace'] as const) {
      expect(spec[hostKey] ?? false, hostKey).toBe(false);
    }
    expect(spec.securityContext?.runAsNonRoot).toBe(true);
    expect(spec.securityContext?.seccompProfile).toEqual({ type: 'RuntimeDefault' });
  });

  it.each(
    workloads.flatMap((w) =>
      [...(podOf(w).initContainers ?? []), ...podOf(w).containers].map(
        (c) => [`${w.metadata.name}/${c.name}`, c] as const,
      ),
    ),
  )('%s: hardened container', (_, c) => {
    const sc = c.securityContext ?? {};
    expect(sc.allowPrivilegeEscalation).toBe(false);
    expect(sc.readOnlyRootFilesystem).toBe(true);
    expect(sc.privileged ?? false).toBe(false);
    expect(sc.capabilities?.drop).toEqual(['ALL']);
    expect(sc.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    expect(c.image).not.toMatch(/:latest$|^[^:]+$/);
    expect(c.resources?.limits?.['memory']).toBeDefined();
    expect(c.resources?.limits?.['cpu']).toBeDefined();
  });
});

describe('the basic-user pod', () => {
  it('runs the lockdown first, then the sidecar as a native sidecar whose startupProbe gates the agent', () => {
    expect(pod.initContainers?.map((c) => c.name)).toEqual(['egress-lockdown', 'sidecar']);
    const sidecar = init('sidecar');
    expect(sidecar.restartPolicy).toBe('Always');
    expect(sidecar.startupProbe?.exec?.command).toEqual(['/usr/local/bin/sidecar-healthcheck']);
    expect(init('egress-lockdown').restartPolicy).toBeUndefined();
  });

  it('gives the lockdown init container root with exactly the capabilities it needs, and proves the rules', () => {
    const lockdown = init('egress-lockdown');
    expect(lockdown.securityContext).toMatchObject({ runAsUser: 0, runAsNonRoot: false });
    expect([...(lockdown.securityContext?.capabilities?.add ?? [])].sort()).toEqual([
      'CHOWN',
      'NET_ADMIN',
      'SETGID',
      'SETUID',
    ]);
    const script = [...(lockdown.command ?? []), ...(lockdown.args ?? [])].join(' ');
    expect(script).toMatch(/egress-lockdown install && egress-lockdown verify/);
    const env = Object.fromEntries((lockdown.env ?? []).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({ SIDECAR_UID: '10001', AGENT_UID: '10002' });
    expect(env['LOCKDOWN_VERIFY_TARGET']).toMatch(/:\d+$/);
  });

  it('runs the sidecar as 10001 with no capabilities, starting only after the verified lockdown', () => {
    const sidecar = init('sidecar');
    expect(sidecar.securityContext).toMatchObject({
      runAsUser: 10001,
      runAsGroup: 10001,
      runAsNonRoot: true,
    });
    expect(sidecar.securityContext?.capabilities?.add).toBeUndefined();
    const env = Object.fromEntries((sidecar.env ?? []).map((e) => [e.name, e.value]));
    expect(env['SIDECAR_LOCKDOWN']).toBe('external');
    expect(env['SIDECAR_LISTEN']).toBe('127.0.0.1:15000');
    // The admin API on a UNIX socket in a volume only the sidecar mounts: no port for the agent to take over.
    expect(env['SIDECAR_ADMIN_LISTEN']).toBe('unix:/run/agent-sidecar-admin/admin.sock');
    const socketUsers = [...(pod.initContainers ?? []), ...pod.containers].filter((c) =>
      c.volumeMounts?.some((m) => m.name === 'admin-socket'),
    );
    expect(socketUsers.map((c) => c.name)).toEqual(['sidecar']);
    const mounts = Object.fromEntries((sidecar.volumeMounts ?? []).map((m) => [m.name, m]));
    for (const name of ['policy', 'sidecar-config', 'admin-token', 'identity', 'model-key', 'lockdown']) {
      expect(mounts[name]?.readOnly, name).toBe(true);
    }
    expect(mounts['lockdown']?.mountPath).toBe('/run/agent-sidecar');
  });

  it('runs the agent as another UID with nothing of the sidecar mounted, no secret, and the sidecar as proxy', () => {
    expect(agent.securityContext).toMatchObject({ runAsUser: 10002, runAsGroup: 10002, runAsNonRoot: true });
    expect(agent.securityContext?.capabilities?.add).toBeUndefined();
    expect((agent.volumeMounts ?? []).map((m) => m.name)).toEqual(['agent-tmp']);
    expect(agent.envFrom).toBeUndefined();
    for (const e of agent.env ?? []) {
      expect(e.valueFrom, e.name).toBeUndefined();
      expect(e.name).not.toMatch(/token|key|secret|password|credential/i);
    }
    const env = Object.fromEntries((agent.env ?? []).map((e) => [e.name, e.value]));
    expect(env['HTTP_PROXY']).toBe('http://127.0.0.1:15000');
    expect(env['HTTPS_PROXY']).toBe('http://127.0.0.1:15000');
  });

  it('adds no group to every container (no fsGroup), so the agent keeps its one group', () => {
    expect(pod.securityContext?.fsGroup).toBeUndefined();
    expect(pod.securityContext?.supplementalGroups).toBeUndefined();
  });

  it('keeps one audit volume per replica', () => {
    const spec = statefulSet['spec'] as { volumeClaimTemplates: Array<{ metadata: { name: string } }> };
    expect(spec.volumeClaimTemplates.map((t) => t.metadata.name)).toEqual(['audit']);
    const auditMounts = [...(pod.initContainers ?? []), ...pod.containers]
      .filter((c) => c.volumeMounts?.some((m) => m.name === 'audit'))
      .map((c) => c.name);
    expect(auditMounts).toEqual(['egress-lockdown', 'sidecar']);
  });

  it('mounts exactly one policy, byte for byte policies/basic-user.yaml', () => {
    const cm = find('ConfigMap', 'basic-user-policy', ROLE_NS) as Manifest & { data: Record<string, string> };
    expect(Object.keys(cm.data)).toEqual(['policy.yaml']);
    const shipped = readFileSync(join(ROOT, 'policies/basic-user.yaml'), 'utf8');
    expect(cm.data['policy.yaml']).toBe(shipped);
    expect((parse(shipped) as { agent: string }).agent).toBe('basic-user');
    // No other ConfigMap of the namespace carries a policy.
    const others = manifests.filter(
      (m) =>
        m.kind === 'ConfigMap' && m.metadata.namespace === ROLE_NS && m.metadata.name !== 'basic-user-policy',
    ) as Array<Manifest & { data: Record<string, string> }>;
    for (const m of others) {
      for (const text of Object.values(m.data)) expect(text, m.metadata.name).not.toMatch(/^agent:/m);
    }
  });

  it('mounts the secrets read-only into the sidecar only', () => {
    for (const v of pod.volumes ?? []) {
      if (!v.secret) continue;
      const users = [...(pod.initContainers ?? []), ...pod.containers].filter((c) =>
        c.volumeMounts?.some((m) => m.name === v.name),
      );
      expect(
        users.map((c) => c.name),
        v.name,
      ).toEqual(['sidecar']);
      expect(v.secret.defaultMode, v.name).toBe(0o444);
    }
  });
});

describe('NetworkPolicy', () => {
  interface Policy {
    podSelector: Record<string, unknown>;
    policyTypes: string[];
    ingress?: unknown[];
    egress?: Array<{ to: unknown[]; ports: Array<{ protocol: string; port: number }> }>;
  }
  const policies = (ns: string) =>
    manifests
      .filter((m) => m.kind === 'NetworkPolicy' && m.metadata.namespace === ns)
      .map((m) => ({ name: m.metadata.name, spec: m['spec'] as Policy }));

  it.each([ROLE_NS, 'helpdesk-shared'])('%s: denies all ingress and egress by default', (ns) => {
    const deny = policies(ns).find((p) => p.name === 'default-deny');
    expect(deny?.spec).toEqual({ podSelector: {}, policyTypes: ['Ingress', 'Egress'] });
  });

  it('lets the role pods out to the cluster DNS and the shared services only, and nothing in', () => {
    const rules = policies(ROLE_NS);
    expect(rules.every((p) => p.spec.ingress === undefined)).toBe(true);
    const egress = rules.flatMap((p) => p.spec.egress ?? []);
    expect(egress.map((e) => e.ports.map((p) => `${p.protocol}/${p.port}`).sort())).toEqual([
      ['TCP/53', 'UDP/53'],
      ['TCP/8080', 'TCP/8081'],
    ]);
    expect(JSON.stringify(egress)).not.toContain('ipBlock');
  });

  it('admits into the shared namespace only pods of role namespaces, and lets nothing out of it', () => {
    const rules = policies('helpdesk-shared');
    expect(rules.every((p) => p.spec.egress === undefined)).toBe(true);
    expect(JSON.stringify(rules.flatMap((p) => p.spec.ingress ?? []))).toContain('agent-sidecar/role');
    const roleNs = find('Namespace', ROLE_NS);
    expect(roleNs.metadata.labels?.['agent-sidecar/role']).toBe('basic-user');
  });
});
