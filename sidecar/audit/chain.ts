// The audit chain writer: one append-only, hash-chained file per agent, group-committed, with checkpoints.
import { randomUUID } from 'node:crypto';
import { writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { mkdir, open, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { SidecarError } from '../errors.ts';
import { sha256Hex } from '../policy/canonical.ts';
import type { Action } from '../policy/types.ts';
import type {
  AuditEntry,
  AuditInstance,
  AuditRecord,
  ChainHead,
  Checkpoint,
  UnhashedEntry,
} from './entry.ts';
import { auditFileName, checkpointFileName, sealEntry } from './entry.ts';
import { redact } from './redact.ts';
import {
  AUDIT_SYNC_MODES,
  type AuditSyncMode,
  DEFAULT_AUDIT_SYNC,
  DEFAULT_SYNC_INTERVAL_MS,
} from './sync-mode.ts';
import type { ScanOutcome } from './verify.ts';
import { ChainScanner, readCheckpoints, scanAuditFile } from './verify.ts';

/** The file operations a batch depends on, injectable so tests can make the disk fail. */
export interface AuditIo {
  /** Writes all of `data` at the end of the file; may finish synchronously (returning nothing) or asynchronously. */
  write(file: FileHandle, data: Buffer): void | Promise<void>;
  sync(file: FileHandle): Promise<void>;
  truncate(file: FileHandle, length: number): Promise<void>;
}

export type { AuditSyncMode };

export const nodeAuditIo: AuditIo = {
  // Synchronous on purpose: a batch is a few KiB into the page cache (microseconds), and doing it on the event loop
  // spares every decision a thread-pool round trip; only fdatasync, which waits for the device, goes to the pool.
  write(file, data) {
    let offset = 0;
    while (offset < data.length) offset += writeSync(file.fd, data, offset, data.length - offset);
  },
  sync: (file) => file.datasync(),
  truncate: (file, length) => file.truncate(length),
};

/** Reported when open() cut a torn last line off the file and recorded that in the chain. */
export interface RecoveryInfo {
  /** Line the torn bytes started on. */
  readonly line: number;
  readonly bytes: number;
  readonly sha256: string;
  /** Where the torn bytes were kept. */
  readonly sideFile: string;
  /** The `chain_recovery` entry appended for it. */
  readonly entry: AuditEntry;
}

export interface AuditChainOptions {
  readonly dir: string;
  readonly agent: string;
  readonly now?: () => Date;
  readonly instance?: AuditInstance;
  /** When entries are fdatasync'd; see AuditSyncMode. Default `interval`. */
  readonly sync?: AuditSyncMode;
  /** In `interval` mode, the longest an entry waits for its background fdatasync. Default 20 ms. */
  readonly syncIntervalMs?: number;
  /** Write a checkpoint after this many new entries. Default 1000. */
  readonly checkpointEvery?: number;
  /** Write a checkpoint this often when there were new entries. Default 5000. */
  readonly checkpointIntervalMs?: number;
  /** Every checkpoint, for a sink the agent cannot reach (the operational log). */
  readonly onCheckpoint?: (cp: Checkpoint) => void;
  /** A checkpoint could not be written to the checkpoints file (onCheckpoint still received it). */
  readonly onCheckpointError?: (err: unknown) => void;
  readonly onRecovery?: (info: RecoveryInfo) => void;
  /** A background fdatasync (`interval` mode) failed; the chain now refuses every append. */
  readonly onSyncError?: (err: unknown) => void;
  readonly io?: Partial<AuditIo>;
}

interface Queued {
  readonly record: AuditRecord;
  readonly resolve: (entry: AuditEntry) => void;
  readonly reject: (err: unknown) => void;
}

interface ChainInit {
  readonly agent: string;
  readonly path: string;
  readonly checkpointsPath: string;
  readonly file: FileHandle;
  readonly checkpointFile: FileHandle;
  readonly head: ChainHead;
  readonly size: number;
  readonly lastCheckpointCount: number;
  readonly opts: AuditChainOptions;
}

const AGENT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
// Decisions name hosts, paths and arguments: not for every local user to read.
const FILE_MODE = 0o640;
const DIR_MODE = 0o750;
// Bounds one write; a backlog larger than this goes out in several batches.
const MAX_BATCH = 4096;

function describe(err: unknown): string {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  return typeof code === 'string' && !message.includes(code) ? `${code}: ${message}` : message;
}

function writeFailed(detail: string, cause?: unknown): SidecarError {
  return new SidecarError('SIDECAR_ERR_AUDIT_WRITE_FAILED', detail, { cause });
}

function positive(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isSafeInteger(v) || v < 1) {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `audit ${name} must be a positive integer, got ${v}`,
    );
  }
  return v;
}

function syncMode(mode: AuditSyncMode | undefined): AuditSyncMode {
  if (mode === undefined) return DEFAULT_AUDIT_SYNC;
  if (!AUDIT_SYNC_MODES.includes(mode)) {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `audit sync must be one of ${AUDIT_SYNC_MODES.join(', ')}, got ${JSON.stringify(mode)}`,
    );
  }
  return mode;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optionalString(v: unknown): boolean {
  return v === null || typeof v === 'string';
}

// A JSON-safe, redacted copy taken at append time: the caller may reuse its objects while the batch waits.
function snapshot(record: AuditRecord): AuditRecord {
  const r = record as unknown as Record<string, unknown>;
  const valid =
    typeof r['decision_id'] === 'string' &&
    typeof r['agent'] === 'string' &&
    typeof r['kind'] === 'string' &&
    (r['action'] === null || isPlainObject(r['action'])) &&
    optionalString(r['effect']) &&
    optionalString(r['rule']) &&
    typeof r['reason'] === 'string' &&
    optionalString(r['policy_digest']) &&
    (r['extra'] === undefined || isPlainObject(r['extra']));
  if (!valid) throw new TypeError('audit record has a missing or mistyped field');
  const out: AuditRecord = {
    decision_id: record.decision_id,
    agent: record.agent,
    kind: record.kind,
    action: record.action === null ? null : (redact(record.action) as Action),
    effect: record.effect,
    rule: record.rule,
    reason: record.reason,
    policy_digest: record.policy_digest,
  };
  return record.extra === undefined
    ? out
    : { ...out, extra: redact(record.extra) as Record<string, unknown> };
}

async function probeDir(dir: string, agent: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: DIR_MODE });
    const probe = join(dir, `.${agent}.probe-${process.pid}-${randomUUID()}`);
    const fh = await open(probe, 'wx', FILE_MODE);
    try {
      await fh.write('probe\n');
    } finally {
      await fh.close();
    }
    await unlink(probe);
  } catch (err) {
    throw new SidecarError('SIDECAR_ERR_AUDIT_DIR_UNWRITABLE', `${dir}: ${describe(err)}`, { cause: err });
  }
}

// Makes a newly created file's directory entry durable; some file systems refuse, which costs nothing here.
async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // best effort
  }
}

async function scanExisting(
  path: string,
  checkpoints: readonly Checkpoint[],
  agent: string,
): Promise<ScanOutcome | undefined> {
  try {
    return await scanAuditFile(path, checkpoints, agent);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SidecarError('SIDECAR_ERR_AUDIT_DIR_UNWRITABLE', `${path}: ${describe(err)}`, { cause: err });
  }
}

async function writeSideFile(path: string, bytes: Buffer, ts: string): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    const side = `${path}.torn-${ts}${attempt === 0 ? '' : `-${attempt}`}`;
    let fh: FileHandle;
    try {
      fh = await open(side, 'wx', FILE_MODE);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST' && attempt < 100) continue;
      throw err;
    }
    try {
      await fh.write(bytes);
      await fh.datasync();
    } finally {
      await fh.close();
    }
    return side;
  }
}

/** A per-agent audit chain. Appends resolve only once their bytes are on disk; any failure rejects (deny). */
export class AuditChain {
  readonly agent: string;
  readonly path: string;
  readonly checkpointsPath: string;
  private readonly file: FileHandle;
  private readonly checkpointFile: FileHandle;
  private readonly io: AuditIo;
  private readonly now: () => Date;
  private readonly instance: AuditInstance;
  private readonly syncMode: AuditSyncMode;
  private readonly syncIntervalMs: number;
  private readonly checkpointEvery: number;
  private readonly opts: AuditChainOptions;
  /** The last written entry: what the next entry's `prev` will be. */
  private persisted: ChainHead;
  /** The last entry known to be on the device (fdatasync'd); equals `persisted` in `always` mode. */
  private synced: ChainHead;
  private syncTimer: ReturnType<typeof setTimeout> | undefined;
  private syncing: Promise<void> | undefined;
  private size: number;
  private lastCheckpointCount: number;
  private queue: Queued[] = [];
  private draining: Promise<void> | undefined;
  private failure: SidecarError | undefined;
  private closing: Promise<void> | undefined;
  private checkpointWrites: Promise<void> = Promise.resolve();
  private timer: ReturnType<typeof setInterval> | undefined;

  private constructor(init: ChainInit) {
    const { opts } = init;
    this.agent = init.agent;
    this.path = init.path;
    this.checkpointsPath = init.checkpointsPath;
    this.file = init.file;
    this.checkpointFile = init.checkpointFile;
    this.persisted = init.head;
    this.synced = init.head;
    this.size = init.size;
    this.lastCheckpointCount = init.lastCheckpointCount;
    this.opts = opts;
    this.io = { ...nodeAuditIo, ...opts.io };
    this.now = opts.now ?? (() => new Date());
    const instance = opts.instance ?? { hostname: hostname(), pid: process.pid };
    this.instance = { hostname: instance.hostname, pid: instance.pid };
    this.syncMode = syncMode(opts.sync);
    this.syncIntervalMs = positive('syncIntervalMs', opts.syncIntervalMs, DEFAULT_SYNC_INTERVAL_MS);
    this.checkpointEvery = positive('checkpointEvery', opts.checkpointEvery, 1000);
  }

  /**
   * Opens (or creates) `<dir>/<agent>.audit.jsonl`, verifies what is there and continues it.
   * Throws SIDECAR_ERR_AUDIT_DIR_UNWRITABLE when the directory cannot be written and
   * SIDECAR_ERR_AUDIT_CHAIN_BROKEN when the existing chain is damaged beyond a torn last line, or holds another
   * agent's entries or checkpoints.
   */
  static async open(opts: AuditChainOptions): Promise<AuditChain> {
    if (!AGENT_NAME.test(opts.agent)) {
      throw new SidecarError(
        'SIDECAR_ERR_CONFIG_INVALID',
        `audit agent name ${JSON.stringify(opts.agent)} is not a safe file name`,
      );
    }
    positive('checkpointEvery', opts.checkpointEvery, 1000);
    positive('syncIntervalMs', opts.syncIntervalMs, DEFAULT_SYNC_INTERVAL_MS);
    const mode = syncMode(opts.sync);
    const intervalMs = positive('checkpointIntervalMs', opts.checkpointIntervalMs, 5000);
    const dir = resolve(opts.dir);
    await probeDir(dir, opts.agent);
    const path = join(dir, auditFileName(opts.agent));
    const checkpointsPath = join(dir, checkpointFileName(opts.agent));

    let checkpoints: Checkpoint[];
    try {
      checkpoints = await readCheckpoints(checkpointsPath);
    } catch (err) {
      throw new SidecarError('SIDECAR_ERR_AUDIT_DIR_UNWRITABLE', `${checkpointsPath}: ${describe(err)}`, {
        cause: err,
      });
    }
    // Only this agent's chain is continued: another agent's entries or checkpoints are damage like any other.
    const existing = await scanExisting(path, checkpoints, opts.agent);
    const outcome = existing ?? new ChainScanner(checkpoints, opts.agent).finish();
    const verdict = outcome.result;
    if (!verdict.ok && verdict.kind !== 'torn') {
      throw new SidecarError(
        'SIDECAR_ERR_AUDIT_CHAIN_BROKEN',
        `${path}:${verdict.line}: ${verdict.kind}: ${verdict.message}`,
      );
    }

    let file: FileHandle;
    let checkpointFile: FileHandle;
    try {
      file = await open(path, 'a+', FILE_MODE);
    } catch (err) {
      throw new SidecarError('SIDECAR_ERR_AUDIT_DIR_UNWRITABLE', `${path}: ${describe(err)}`, { cause: err });
    }
    try {
      checkpointFile = await open(checkpointsPath, 'a', FILE_MODE);
    } catch (err) {
      await file.close();
      throw new SidecarError('SIDECAR_ERR_AUDIT_DIR_UNWRITABLE', `${checkpointsPath}: ${describe(err)}`, {
        cause: err,
      });
    }
    if (!existing && mode !== 'never') await syncDir(dir);

    const latest = checkpoints.reduce((max, cp) => Math.max(max, cp.count), 0);
    const chain = new AuditChain({
      agent: opts.agent,
      path,
      checkpointsPath,
      file,
      checkpointFile,
      head: outcome.head,
      size: outcome.goodBytes,
      lastCheckpointCount: latest,
      opts,
    });
    try {
      const { size } = await file.stat();
      const tornBytes = size - outcome.goodBytes;
      if (tornBytes < 0 || (verdict.ok && tornBytes !== 0)) {
        throw new SidecarError(
          'SIDECAR_ERR_AUDIT_CHAIN_BROKEN',
          `${path}: the file changed while it was being opened`,
        );
      }
      if (!verdict.ok) await chain.recoverTornTail(verdict.line, tornBytes);
    } catch (err) {
      await chain.close().catch(() => {});
      throw err;
    }
    chain.timer = setInterval(() => chain.checkpointIfBehind(1), intervalMs);
    chain.timer.unref();
    return chain;
  }

  /** True once the chain refuses every append (a write it could not undo, or a failed background sync). */
  get failed(): boolean {
    return this.failure !== undefined;
  }

  /** The last written entry: what the next entry's `prev` will be. */
  get head(): ChainHead {
    return this.persisted;
  }

  /**
   * Queues a record; resolves with its entry once written (in `always` mode, synced). Rejects with
   * SIDECAR_ERR_AUDIT_WRITE_FAILED, also for a record of another agent than the chain's.
   */
  append(record: AuditRecord): Promise<AuditEntry> {
    if (this.closing) return Promise.reject(writeFailed(`${this.path}: the audit chain is closed`));
    if (this.failure) return Promise.reject(this.failure);
    let copy: AuditRecord;
    try {
      copy = snapshot(record);
    } catch (err) {
      return Promise.reject(writeFailed(`invalid audit record: ${describe(err)}`, err));
    }
    if (copy.agent !== this.agent) {
      return Promise.reject(
        writeFailed(
          `${this.path}: audit record is for agent ${JSON.stringify(copy.agent)}, but this chain is ${JSON.stringify(this.agent)}'s`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ record: copy, resolve, reject });
      this.draining ??= this.drain();
    });
  }

  /** Flushes queued appends, writes a final checkpoint and closes the files. Later appends reject. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    while (this.draining) await this.draining;
    // A sync already running when the close began covers only what was written before it started: sync again until
    // everything written is on the device, so the final checkpoint covers every entry answered.
    if (this.syncMode === 'interval') {
      while (this.synced.count !== this.persisted.count && !this.failure) await this.syncNow();
    }
    this.checkpointIfBehind(1);
    await this.checkpointWrites;
    await Promise.allSettled([this.file.close(), this.checkpointFile.close()]);
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      // Let every appender that is about to run join this batch: one write and one sync for all of them.
      await new Promise<void>((r) => setImmediate(r));
      if (this.failure) {
        const failure = this.failure;
        for (const item of this.queue.splice(0)) item.reject(failure);
        break;
      }
      await this.commit(this.queue.splice(0, MAX_BATCH));
    }
    this.draining = undefined;
  }

  private async commit(batch: readonly Queued[]): Promise<void> {
    const entries: AuditEntry[] = [];
    let data: Buffer;
    try {
      let { count, hash } = this.persisted;
      const lines: string[] = [];
      for (const { record } of batch) {
        // Members in code-unit order, as canonical JSON has them: the entry then serialises natively (see
        // canonicalJson). The record is a snapshot, whose nested objects redact() copied in key order.
        const extra = record.extra;
        const unhashed: UnhashedEntry = {
          action: record.action,
          agent: record.agent,
          decision_id: record.decision_id,
          effect: record.effect,
          ...(extra === undefined ? {} : { extra }),
          instance: this.instance,
          kind: record.kind,
          policy_digest: record.policy_digest,
          prev: hash,
          reason: record.reason,
          rule: record.rule,
          seq: ++count,
          ts: this.now().toISOString(),
        };
        const sealed = sealEntry(unhashed);
        hash = sealed.entry.hash;
        entries.push(sealed.entry);
        lines.push(sealed.line);
      }
      data = Buffer.from(`${lines.join('\n')}\n`, 'utf8');
    } catch (err) {
      const error = writeFailed(`${this.path}: could not build entries: ${describe(err)}`, err);
      for (const item of batch) item.reject(error);
      return;
    }
    try {
      const written = this.io.write(this.file, data);
      if (written) await written;
      if (this.syncMode === 'always') await this.io.sync(this.file);
    } catch (err) {
      const error = writeFailed(`${this.path}: ${describe(err)}`, err);
      await this.restore(error);
      for (const item of batch) item.reject(error);
      return;
    }
    this.size += data.length;
    const last = entries[entries.length - 1]!;
    this.persisted = { count: last.seq, hash: last.hash };
    if (this.syncMode === 'always') this.synced = this.persisted;
    for (let i = 0; i < batch.length; i++) batch[i]!.resolve(entries[i]!);
    if (this.syncMode === 'interval') this.scheduleSync();
    this.checkpointIfBehind(this.checkpointEvery);
  }

  // One background fdatasync at a time, at most `syncIntervalMs` after the first unsynced batch.
  private scheduleSync(): void {
    if (this.syncTimer !== undefined || this.syncing !== undefined) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      void this.syncNow();
    }, this.syncIntervalMs);
  }

  private syncNow(): Promise<void> {
    if (this.syncTimer !== undefined) {
      clearTimeout(this.syncTimer);
      this.syncTimer = undefined;
    }
    this.syncing ??= this.backgroundSync().finally(() => {
      this.syncing = undefined;
      // Batches written while this sync ran are not covered by it.
      if (this.synced.count !== this.persisted.count && !this.failure && !this.closing) this.scheduleSync();
    });
    return this.syncing;
  }

  private async backgroundSync(): Promise<void> {
    const target = this.persisted;
    if (target.count === this.synced.count || this.failure) return;
    try {
      await this.io.sync(this.file);
    } catch (err) {
      // Entries already answered for may not be on the device: nothing more is decided until an operator looks.
      this.failure = writeFailed(`${this.path}: background fdatasync failed; refusing further appends`, err);
      if (this.timer) clearInterval(this.timer);
      this.opts.onSyncError?.(err);
      return;
    }
    this.synced = target;
    this.checkpointIfBehind(this.checkpointEvery);
  }

  // After a failed batch the file must end where the last good batch ended, or nothing more may be written.
  private async restore(error: SidecarError): Promise<void> {
    try {
      await this.io.truncate(this.file, this.size);
    } catch {
      // Judged by the size below: a write that failed before writing anything needs no truncation.
    }
    try {
      const { size } = await this.file.stat();
      if (size === this.size) return;
    } catch {
      // fall through: the state is unknown
    }
    this.failure = writeFailed(
      `${this.path}: could not restore the file after a failed write; refusing further appends`,
      error,
    );
    if (this.timer) clearInterval(this.timer);
  }

  // Checkpoints describe only `synced`: entries known to be on the device (in `never` mode, written).
  private checkpointIfBehind(minNew: number): void {
    const { count, hash } = this.syncMode === 'never' ? this.persisted : this.synced;
    if (count - this.lastCheckpointCount < minNew) return;
    const cp: Checkpoint = { ts: this.now().toISOString(), agent: this.agent, count, head: hash };
    this.lastCheckpointCount = count;
    try {
      this.opts.onCheckpoint?.(cp);
    } catch (err) {
      // A throwing listener must not stall the commit loop that called it.
      this.opts.onCheckpointError?.(err);
    }
    this.checkpointWrites = this.checkpointWrites.then(() => this.writeCheckpoint(cp));
  }

  private async writeCheckpoint(cp: Checkpoint): Promise<void> {
    try {
      await this.checkpointFile.write(`${JSON.stringify(cp)}\n`);
      if (this.syncMode !== 'never') await this.checkpointFile.datasync();
    } catch (err) {
      this.opts.onCheckpointError?.(err);
    }
  }

  // The torn bytes are evidence: keep them beside the log, cut them off, and say so in the chain itself.
  private async recoverTornTail(line: number, length: number): Promise<void> {
    const bytes = Buffer.alloc(length);
    let read = 0;
    while (read < length) {
      const { bytesRead } = await this.file.read(bytes, read, length - read, this.size + read);
      if (bytesRead === 0) break;
      read += bytesRead;
    }
    const torn = bytes.subarray(0, read);
    const sha256 = sha256Hex(torn);
    let sideFile: string;
    try {
      sideFile = await writeSideFile(this.path, torn, this.now().toISOString());
      await this.io.truncate(this.file, this.size);
      if (this.syncMode !== 'never') await this.io.sync(this.file);
    } catch (err) {
      throw writeFailed(`${this.path}: could not recover the torn last line: ${describe(err)}`, err);
    }
    const entry = await this.append({
      decision_id: randomUUID(),
      agent: this.agent,
      kind: 'chain_recovery',
      action: null,
      effect: null,
      rule: null,
      reason: 'torn_tail',
      policy_digest: null,
      extra: { torn_line: line, torn_bytes: torn.length, torn_sha256: sha256, torn_file: basename(sideFile) },
    });
    this.opts.onRecovery?.({ line, bytes: torn.length, sha256, sideFile, entry });
  }
}
