// A real sidecar (startSidecar) whose operational log is captured as text, on port 0.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { REDACT_PATHS } from '../../../sidecar/cli/logger.ts';
import type { MountedRoute } from '../../../sidecar/server/agent-listener.ts';
import { type Sidecar, type SidecarParts, startSidecar } from '../../../sidecar/server/sidecar.ts';

export interface LoggedSidecar {
  readonly sidecar: Sidecar;
  readonly port: number;
  readonly url: string;
  /** Everything the sidecar wrote to its operational log so far. */
  logText(): string;
  auditText(): Promise<string>;
  close(): Promise<void>;
}

export async function startLoggedSidecar(opts: {
  readonly policy: string;
  readonly mounts?: (parts: SidecarParts) => Promise<readonly MountedRoute[]>;
}): Promise<LoggedSidecar> {
  const dir = await mkdtemp(join(tmpdir(), 'logged-sidecar-'));
  const policyPath = join(dir, 'policy.yaml');
  await writeFile(policyPath, opts.policy);
  let text = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString('utf8');
      cb();
    },
  });
  // The CLI's root logger configuration (same redaction paths), writing synchronously to the sink.
  const logger = pino({ level: 'info', redact: { paths: REDACT_PATHS, censor: '[REDACTED]' } }, sink);
  const sidecar = await startSidecar(
    {
      policyPath,
      listen: { host: '127.0.0.1', port: 0 },
      auditDir: join(dir, 'audit'),
      auditSync: 'never',
      watchPolicy: false,
      ...(opts.mounts ? { mounts: opts.mounts } : {}),
    },
    logger,
  );
  const agent = sidecar.policies.current.agent;
  const port = sidecar.agentAddress.port;
  return {
    sidecar,
    port,
    url: `http://127.0.0.1:${port}`,
    logText: () => text,
    auditText: () => readFile(join(dir, 'audit', `${agent}.audit.jsonl`), 'utf8').catch(() => ''),
    close: async () => {
      await sidecar.close(200);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
