// Assembles one sidecar: policy, audit chain, enforcer, agent listener, admin listener; and shuts it down gracefully.

import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { ApprovalQueue } from '../approvals/approval-queue.ts';
import { AuditChain, type AuditSyncMode } from '../audit/chain.ts';
import type { SidecarConfigFile } from '../config-file.ts';
import { SidecarError } from '../errors.ts';
import { AddressGuard } from '../proxy/address-guard.ts';
import { createForwardProxy, type ProxyLimits } from '../proxy/forward-proxy.ts';
import { loadAdminToken } from './admin-auth.ts';
import { type AdminAddress, createAdminHandler, startAdminListener } from './admin-listener.ts';
import {
  createAgentServer,
  DEFAULT_LISTENER_LIMITS,
  type ListenerLimits,
  type MountedRoute,
} from './agent-listener.ts';
import { SidecarEnforcer } from './enforcer.ts';
import { createMetrics, type Metrics } from './metrics.ts';
import { PolicyHolder } from './policy-holder.ts';
import { RateLimiter } from './rate-limiter.ts';

export type ListenAddress =
  | { readonly host: string; readonly port: number }
  | { readonly socketPath: string };

export interface SidecarConfig {
  readonly policyPath: string;
  readonly listen: { readonly host: string; readonly port: number };
  readonly adminListen?: ListenAddress;
  readonly adminTokenFile?: string;
  readonly auditDir: string;
  readonly approvalTimeoutMs?: number;
  readonly watchPolicy?: boolean;
  /** When audit entries are fdatasync'd (AuditChain's `sync`); default `interval`. */
  readonly auditSync?: AuditSyncMode;
  readonly listenerLimits?: Partial<ListenerLimits>;
  readonly proxyLimits?: Partial<ProxyLimits>;
  /**
   * Gateway settings from the config file. When present (even `{}`), the model gateway is mounted, and the MCP
   * gateway too when `mcp` is configured; `run` always passes it. Absent: no gateways (library use, tests).
   */
  readonly gateways?: SidecarConfigFile;
  /** Extra routes mounted on the agent listener; built with the sidecar's parts. */
  readonly mounts?: (parts: SidecarParts) => Promise<readonly MountedRoute[]> | readonly MountedRoute[];
}

export interface SidecarParts {
  readonly enforcer: SidecarEnforcer;
  readonly policies: PolicyHolder;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** For mounted gateways: work to run at shutdown, after the agent listener drained, before the audit log closes. */
  readonly onClose?: (fn: () => Promise<void>) => void;
}

export interface Sidecar extends SidecarParts {
  readonly agentAddress: AddressInfo;
  readonly adminAddress: AdminAddress | undefined;
  readonly audit: AuditChain;
  readonly approvals: ApprovalQueue;
  /** Stops accepting, lets in-flight requests finish within graceMs, denies pending approvals, flushes the audit log. */
  close(graceMs?: number): Promise<void>;
}

function listen(server: Server, host: string, port: number): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      server.off('listening', onListening);
      reject(
        new SidecarError(
          'SIDECAR_ERR_LISTEN_FAILED',
          `cannot listen on ${host}:${port} (${err.code ?? err.message})`,
        ),
      );
    };
    const onListening = () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    server.listen(port, host);
  });
}

/** The model gateway (always: without a key it refuses cleanly) and, when configured, the MCP tool gateway. */
async function mountGateways(
  file: SidecarConfigFile | undefined,
  parts: SidecarParts,
  auditDir: string,
): Promise<MountedRoute[]> {
  if (file === undefined) return [];
  // Loaded on demand: they pull in the MCP SDK and jose, which a sidecar without them does not need.
  const { createModelGateway } = await import('../model/gateway.ts');
  const model = await createModelGateway({ config: file.model, parts, auditDir });
  const routes: MountedRoute[] = [...model.routes];
  if (file.mcp) {
    const [{ createToolGateway }, { createEndUserVerifier }] = await Promise.all([
      import('../tools/gateway.ts'),
      import('../identity/end-user.ts'),
    ]);
    const log = parts.logger.child({ component: 'identity' });
    if (file.identity?.insecure_loopback_jwks_url === true && file.identity.jwks_url?.startsWith('http:')) {
      log.warn(
        { jwks_url: file.identity.jwks_url },
        'end-user keys fetched over plain http on loopback (insecure_loopback_jwks_url): for development only, the agent could serve its own keys there',
      );
    }
    const identity = file.identity
      ? await createEndUserVerifier(file.identity, {
          agent: parts.policies.current.agent,
          onProblem: (reason, detail) => log.warn({ reason, detail }, 'end-user token refused'),
        })
      : undefined;
    const tools = await createToolGateway({
      config: file.mcp,
      ...(identity ? { identity } : {}),
      parts: { ...parts, logger: parts.logger.child({ component: 'tools' }) },
    });
    parts.onClose?.(() => tools.close());
    routes.push(tools.route);
  }
  return routes;
}

export async function startSidecar(config: SidecarConfig, logger: Logger): Promise<Sidecar> {
  const metrics = createMetrics();
  const policies = await PolicyHolder.load(config.policyPath, logger.child({ component: 'policy' }), metrics);
  const agent = policies.current.agent;
  const adminToken = config.adminTokenFile ? await loadAdminToken(config.adminTokenFile) : undefined;
  const auditLog = logger.child({ component: 'audit' });
  const audit = await AuditChain.open({
    dir: config.auditDir,
    agent,
    ...(config.auditSync === undefined ? {} : { sync: config.auditSync }),
    onCheckpoint: (cp) => auditLog.info({ checkpoint: cp }, 'audit checkpoint'),
    onCheckpointError: (err) =>
      auditLog.error({ err: (err as Error).message }, 'audit checkpoint write failed'),
    onRecovery: (info) =>
      auditLog.error(
        { recovery: { ...info, entry: info.entry.hash } },
        'audit log had a torn tail; recovered',
      ),
    onSyncError: (err) => {
      metrics.auditFailures.inc();
      auditLog.error(
        { err: (err as Error).message },
        'audit fdatasync failed; denying every decision from now on',
      );
    },
  });
  const cleanup: Array<() => Promise<void>> = [() => audit.close()];
  try {
    const approvals = new ApprovalQueue({
      ...(config.approvalTimeoutMs === undefined ? {} : { timeoutMs: config.approvalTimeoutMs }),
      onChange: (n) => metrics.approvalsPending.set(n),
    });
    const enforcer = new SidecarEnforcer({
      policies,
      audit,
      approvals,
      limiter: new RateLimiter(),
      metrics,
      logger: logger.child({ component: 'enforcer' }),
    });
    const closers: Array<() => Promise<void>> = [];
    const onClose = (fn: () => Promise<void>) => void closers.push(fn);
    const parts: SidecarParts = { enforcer, policies, metrics, logger, onClose };
    cleanup.push(async () => {
      for (const fn of closers.reverse()) await fn().catch(() => undefined);
    });
    const ownListeners: Array<{ address: string; port: number }> = [];
    const guard = new AddressGuard({ ownListeners: () => ownListeners });
    const proxy = createForwardProxy({
      enforcer,
      currentPolicy: () => policies.current,
      guard,
      logger: logger.child({ component: 'proxy' }),
      metrics,
      ...(config.proxyLimits ? { limits: config.proxyLimits } : {}),
    });
    cleanup.push(() => proxy.close());
    let started = false;
    // Not ready before the listeners are up, nor once the audit chain refuses appends (every decision is DENY then).
    const ready = () => started && !audit.failed;
    const routes = [
      ...(await mountGateways(config.gateways, parts, config.auditDir)),
      ...(config.mounts ? await config.mounts(parts) : []),
    ];
    const server = createAgentServer(
      { enforcer, proxy, logger: logger.child({ component: 'agent-api' }), ready, routes },
      {
        ...DEFAULT_LISTENER_LIMITS,
        // A request with a body is not read until its decision, which may wait for a human: outlast that wait.
        requestTimeoutMs: Math.max(
          DEFAULT_LISTENER_LIMITS.requestTimeoutMs,
          (config.approvalTimeoutMs ?? 300_000) + 30_000,
        ),
        ...config.listenerLimits,
      },
    );
    const agentAddress = await listen(server, config.listen.host, config.listen.port);
    ownListeners.push({ address: agentAddress.address, port: agentAddress.port });
    cleanup.push(
      () =>
        new Promise<void>((r) => {
          server.close(() => r());
          server.closeIdleConnections();
        }),
    );

    let adminAddress: AdminAddress | undefined;
    if (config.adminListen && adminToken) {
      const handler = createAdminHandler({
        token: adminToken,
        approvals,
        metrics,
        logger: logger.child({ component: 'admin-api' }),
        ready,
      });
      const admin = await startAdminListener(config.adminListen, handler);
      adminAddress = admin.address;
      if ('port' in admin.address)
        ownListeners.push({ address: admin.address.host, port: admin.address.port });
      cleanup.push(() => admin.close());
    } else {
      logger.warn('no admin token file: the admin API is off, so approvals can only time out (DENY)');
    }
    if (config.watchPolicy !== false) policies.watch();
    started = true;
    logger.info(
      {
        agent,
        policy_digest: policies.current.digest,
        listen: `${agentAddress.address}:${agentAddress.port}`,
        admin: adminAddress && ('url' in adminAddress ? adminAddress.url : `unix:${adminAddress.socketPath}`),
        audit_dir: config.auditDir,
      },
      'sidecar ready',
    );
    // Whoever waits for readiness reads this line: it must not sit in a buffered log destination.
    logger.flush();

    let closing: Promise<void> | undefined;
    const close = (graceMs = 10_000) => {
      closing ??= (async () => {
        started = false;
        policies.close();
        // Connections whose last request finishes during the drain go idle then; close them as they do
        // rather than waiting out the keep-alive timeout.
        const reaper = setInterval(() => server.closeIdleConnections(), 25);
        const drained = new Promise<void>((r) => {
          server.close(() => r());
          server.closeIdleConnections();
        }).finally(() => clearInterval(reaper));
        const timer = new Promise<void>((r) => setTimeout(r, graceMs).unref());
        approvals.cancelAll('shutdown');
        await Promise.race([drained, timer]);
        clearInterval(reaper);
        server.closeAllConnections();
        // CONNECT tunnels are sockets node:http no longer tracks, yet the listener counts them: the listener's close
        // (a cleanup below) would wait for as long as an agent keeps a tunnel busy. The proxy cuts them first.
        await proxy.close().catch(() => undefined);
        for (const fn of cleanup.slice(1).reverse()) await fn().catch(() => undefined);
        await audit.close();
        logger.info({ agent }, 'sidecar stopped');
      })();
      return closing;
    };
    return { ...parts, agentAddress, adminAddress, audit, approvals, close };
  } catch (err) {
    for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
    throw err;
  }
}
