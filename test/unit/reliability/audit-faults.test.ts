// The audit disk failing under load (full, unwritable, failing fsync): every action is DENIED while it lasts, no
// upstream is reached, the sidecar keeps answering, and once the disk recovers writes resume and the chain verifies.
// As root, permission bits stop no write, so the failure is injected through AuditChain's `io` (see harness.ts).
import { execFileSync } from 'node:child_process';
import { mkdir, open, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { startSidecar } from '../../../sidecar/server/sidecar.ts';
import { createToolGateway, type ToolGateway } from '../../../sidecar/tools/gateway.ts';
import { rawPost, roleKeyFiles, startFakeUpstream } from '../tools/support.ts';
import {
  auditEntries,
  evaluate,
  FaultyDisk,
  type FaultyUpstream,
  policyText,
  proxied,
  type SidecarUnderTest,
  startFaultyUpstream,
  startWithDisk,
  tempDir,
  underLoad,
  verifyChain,
} from './harness.ts';

let s: (SidecarUnderTest & { audit: unknown }) | undefined;
let up: FaultyUpstream | undefined;
afterEach(async () => {
  await s?.close();
  await up?.close();
  s = undefined;
  up = undefined;
});

interface Seen {
  readonly kind: 'evaluate' | 'proxy';
  readonly status: number;
  readonly effect?: unknown;
  readonly code?: unknown;
  readonly decisionId?: unknown;
}

describe.each([
  { mode: 'enospc' as const, what: 'disk full (a partial write, then ENOSPC)' },
  { mode: 'eacces' as const, what: 'audit file unwritable (EACCES)' },
  // In `always` mode a batch whose fdatasync fails is cut off again and refused, and the next batch may succeed.
  { mode: 'eio-on-sync' as const, what: "fsync failing (EIO, sync 'always')", sync: 'always' as const },
])('$what under load', ({ mode, sync }) => {
  it('denies every action while the fault lasts, resumes after it, and the chain verifies', async () => {
    const disk = new FaultyDisk();
    s = await startWithDisk(disk, sync ? { auditSync: sync } : {});
    up = await startFaultyUpstream();
    const url = s.url;
    const port = s.port;
    const upstream = up;

    const seen = await underLoad(
      8,
      async (i): Promise<Seen> => {
        if (i % 2 === 0) {
          const r = await evaluate(url, { type: 'file_read', path: `/data/${i}` });
          const error = r.body['error'] as { code?: string } | undefined;
          return {
            kind: 'evaluate',
            status: r.status,
            effect: r.body['effect'],
            code: error?.code,
            decisionId: r.body['decision_id'],
          };
        }
        const r = await proxied(port, `http://127.0.0.1:${upstream.port}/x${i}`);
        const body = r.status === 200 ? {} : (JSON.parse(r.body) as { error?: { code?: string } });
        return {
          kind: 'proxy',
          status: r.status,
          code: body.error?.code,
          decisionId: r.headers['x-sidecar-decision-id'],
        };
      },
      async () => {
        await new Promise((r) => setTimeout(r, 300));
        disk.mode = mode;
        // At least 500 ms, and until the disk has refused a few batches (a loaded CI box may be slow to get there).
        await new Promise((r) => setTimeout(r, 500));
        for (let i = 0; i < 50 && disk.failures < 3; i++) await new Promise((r) => setTimeout(r, 100));
        disk.mode = 'ok';
        await new Promise((r) => setTimeout(r, 300));
      },
    );

    expect(disk.failures).toBeGreaterThan(0);
    // No answer is ever anything but a decision or the audit refusal: no 500, no dropped connection.
    for (const r of seen) {
      if (r.kind === 'evaluate') {
        expect(r.status).toBe(200);
        if (r.effect === 'DENY') expect(r.code).toBe('SIDECAR_ERR_AUDIT_WRITE_FAILED');
      } else {
        expect([200, 503]).toContain(r.status);
        if (r.status === 503) expect(r.code).toBe('SIDECAR_ERR_AUDIT_WRITE_FAILED');
      }
    }
    // Never ALLOW without an audit entry: every ALLOW the agents saw is in the chain, every refusal is not.
    const audited = new Map((await auditEntries(s.auditPath)).map((e) => [e.decision_id, e]));
    const allowed = seen.filter((r) => r.effect === 'ALLOW' || (r.kind === 'proxy' && r.status === 200));
    const refused = seen.filter((r) => r.code === 'SIDECAR_ERR_AUDIT_WRITE_FAILED');
    expect(refused.length).toBeGreaterThan(0);
    for (const r of allowed) expect(audited.get(r.decisionId as string)?.effect).toBe('ALLOW');
    for (const r of refused) expect(audited.has(r.decisionId as string)).toBe(false);
    // The upstream was reached exactly once per proxied request that was audited ALLOW, and never otherwise.
    expect(upstream.hits).toBe(seen.filter((r) => r.kind === 'proxy' && r.status === 200).length);
    // Requests started after the fault cleared are allowed again.
    const after = await evaluate(url, { type: 'file_read', path: '/data/after' });
    expect(after.body['effect']).toBe('ALLOW');
    expect(audited.size + 1).toBe((await auditEntries(s.auditPath)).length);
    const v = await verifyChain(s.auditPath);
    expect(v).toMatchObject({ ok: true });
    // The metric counts what was refused for want of an audit line.
    const failures = (await s.metrics.auditFailures.get()).values[0]?.value ?? 0;
    expect(failures).toBe(refused.length);
  });
});

describe("a background fdatasync that fails (sync 'interval', the default)", () => {
  it('refuses every later decision, never allows one unaudited, and stops being ready', async () => {
    const disk = new FaultyDisk();
    s = await startWithDisk(disk, { auditSync: 'interval' });
    const first = await evaluate(s.url, { type: 'file_read', path: '/data/a' });
    expect(first.body['effect']).toBe('ALLOW');
    expect((await fetch(`${s.url}/readyz`)).status).toBe(200);
    disk.mode = 'eio-on-sync';
    // The entry for this decision was written; its background sync is what fails.
    await evaluate(s.url, { type: 'file_read', path: '/data/b' });
    await expect.poll(() => disk.failures, { timeout: 5_000 }).toBeGreaterThan(0);
    disk.mode = 'ok';
    // After a failed fdatasync the kernel may have dropped the unsynced pages: nothing more is chained after them.
    const later = await evaluate(s.url, { type: 'file_read', path: '/data/c' });
    expect(later.body).toMatchObject({ effect: 'DENY', error: { code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED' } });
    expect((await fetch(`${s.url}/readyz`)).status).toBe(503);
    const audited = new Set((await auditEntries(s.auditPath)).map((e) => e.decision_id));
    expect(audited.has(first.body['decision_id'] as string)).toBe(true);
    expect(audited.has(later.body['decision_id'] as string)).toBe(false);
  });
});

describe('a failed write that cannot be undone', () => {
  it('when the file cannot be restored after a failed write, the chain stays refused (DENY) rather than guess', async () => {
    const disk = new FaultyDisk();
    // Truncation fails too: the file may end in a torn batch, so no later entry may be chained after it.
    disk.truncate = async () => {
      throw Object.assign(new Error('read-only file system'), { code: 'EROFS' });
    };
    s = await startWithDisk(disk);
    expect((await evaluate(s.url, { type: 'file_read', path: '/data/a' })).body['effect']).toBe('ALLOW');
    disk.mode = 'enospc';
    const r = await evaluate(s.url, { type: 'file_read', path: '/data/b' });
    expect(r.body).toMatchObject({ effect: 'DENY', error: { code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED' } });
    disk.mode = 'ok';
    const later = await evaluate(s.url, { type: 'file_read', path: '/data/c' });
    expect(later.body).toMatchObject({ effect: 'DENY', error: { code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED' } });
    // What is on disk is one good entry and a torn half-batch: verify names the torn tail, nothing worse.
    const v = await verifyChain(s.auditPath);
    expect(v).toMatchObject({ ok: false, kind: 'torn', line: 2 });
  });
});

// A real full file system when this machine lets us mount one (root in a sandbox that allows tmpfs): the shipped
// io, not an injected one. Skipped, and said so, where mount is refused.
const TMPFS_BYTES = 256 * 1024;
async function mountTmpfs(): Promise<string | undefined> {
  const dir = await tempDir('tmpfs');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${TMPFS_BYTES},mode=0755`, 'tmpfs', dir], {
      stdio: 'ignore',
    });
    return dir;
  } catch {
    await rm(dir, { recursive: true, force: true });
    return undefined;
  }
}
const probe = await mountTmpfs();
if (probe) {
  execFileSync('umount', [probe]);
  await rm(probe, { recursive: true, force: true });
}

describe.skipIf(!probe)('a real tmpfs audit dir filling up under load (no injection)', () => {
  it('denies while the disk is full, resumes once space is freed, and the chain verifies', async () => {
    const mnt = (await mountTmpfs()) as string;
    const dir = await tempDir('fullfs');
    const policyPath = join(dir, 'policy.yaml');
    await writeFile(policyPath, policyText());
    const sidecar = await startSidecar(
      {
        policyPath,
        listen: { host: '127.0.0.1', port: 0 },
        auditDir: join(mnt, 'audit'),
        watchPolicy: false,
      },
      pino({ level: 'silent' }),
    );
    try {
      const url = `http://127.0.0.1:${sidecar.agentAddress.port}`;
      expect((await evaluate(url, { type: 'file_read', path: '/data/before' })).body['effect']).toBe('ALLOW');
      // Fill every free byte.
      await mkdir(join(mnt, 'filler'));
      const filler = await open(join(mnt, 'filler', 'zeros'), 'w');
      const block = Buffer.alloc(4096);
      try {
        for (;;) await filler.write(block);
      } catch (err) {
        expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
      } finally {
        await filler.close();
      }
      // A small batch can still fit in the audit file's last page (or in what a failed batch freed when it was cut
      // off again): those are ALLOW and audited, checked below. Everything else is the refusal.
      const during = [];
      for (let round = 0; round < 4; round++) {
        during.push(
          ...(await Promise.all(
            Array.from({ length: 50 }, (_, i) =>
              evaluate(url, { type: 'file_read', path: `/data/full-${round}-${i}` }),
            ),
          )),
        );
      }
      const refused = during.filter((r) => r.body['effect'] === 'DENY');
      expect(refused.length).toBeGreaterThan(100);
      for (const r of refused) expect(r.body['error']).toEqual({ code: 'SIDECAR_ERR_AUDIT_WRITE_FAILED' });
      await rm(join(mnt, 'filler'), { recursive: true });
      const after = await Promise.all(
        Array.from({ length: 50 }, (_, i) => evaluate(url, { type: 'file_read', path: `/data/after-${i}` })),
      );
      expect(after.every((r) => r.body['effect'] === 'ALLOW')).toBe(true);
      const entries = await auditEntries(sidecar.audit.path);
      const ids = new Set(entries.map((e) => e.decision_id));
      for (const r of during)
        expect(ids.has(r.body['decision_id'] as string)).toBe(r.body['effect'] === 'ALLOW');
      for (const r of after) expect(ids.has(r.body['decision_id'] as string)).toBe(true);
      expect(await verifyChain(sidecar.audit.path)).toMatchObject({ ok: true, count: entries.length });
    } finally {
      await sidecar.close(100);
      execFileSync('umount', [mnt]);
      await rm(mnt, { recursive: true, force: true });
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('MCP tools/call while the audit disk is full', () => {
  it('is refused with the audit code, the tool server never called; calls go through again once the disk recovers', async () => {
    const keysDir = await tempDir('mcp-keys');
    const keys = await roleKeyFiles(keysDir);
    const tools = await startFakeUpstream([{ name: 'lookup', behaviour: 'echo' }]);
    const disk = new FaultyDisk();
    let gateway: ToolGateway | undefined;
    s = await startWithDisk(disk, {
      policy:
        'agent: basic-user\nrules:\n  - name: lookup\n    action: tool_call\n    conditions: { tool: { equals: lookup } }\n    effect: ALLOW\n',
      mounts: async (parts) => {
        gateway = await createToolGateway({
          config: {
            upstreams: [{ name: 'fake', url: tools.url }],
            context: { key_file: keys.privateFiles.get('basic-user') as string },
          },
          parts,
        });
        return [gateway.route];
      },
    });
    try {
      const call = (id: number) =>
        rawPost(
          `${s?.url}/mcp`,
          JSON.stringify({
            jsonrpc: '2.0',
            id,
            method: 'tools/call',
            params: { name: 'lookup', arguments: { q: id } },
          }),
        );
      const calls = () => tools.received.filter((m) => m.method === 'tools/call').length;
      expect((await call(1)).status).toBe(200);
      expect(calls()).toBe(1);
      disk.mode = 'enospc';
      const refused = await Promise.all([2, 3, 4, 5, 6].map(call));
      for (const r of refused) expect(r.text).toContain('SIDECAR_ERR_AUDIT_WRITE_FAILED');
      expect(calls()).toBe(1);
      disk.mode = 'ok';
      expect((await call(7)).status).toBe(200);
      expect(calls()).toBe(2);
      expect(await verifyChain(s.auditPath)).toMatchObject({ ok: true, count: 2 });
    } finally {
      await gateway?.close();
      await tools.close();
      await rm(keysDir, { recursive: true, force: true });
    }
  });
});
