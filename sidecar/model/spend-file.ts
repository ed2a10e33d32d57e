// The spend file: budget and model totals that survive a restart, loaded once and rewritten atomically (temp + rename).
import { randomUUID } from 'node:crypto';
import { type FileHandle, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import { SidecarError } from '../errors.ts';
import type { SpendState } from './ledger.ts';

const amount = z.number().finite().nonnegative();

const budgetState = z.object({
  period: z.enum(['day', 'month']),
  key: z.string().regex(/^\d{4}-\d{2}(-\d{2})?$/),
  spent_tokens: amount,
  spent_usd: amount,
  reserved_tokens: amount,
  reserved_usd: amount,
});

const modelTotals = z.object({
  requests: amount,
  input_tokens: amount,
  output_tokens: amount,
  cache_creation_input_tokens: amount,
  cache_read_input_tokens: amount,
  cost_usd: amount,
  unpriced_requests: amount,
});

const spendFileSchema = z.object({
  version: z.literal(1),
  agent: z.string(),
  updated: z.string(),
  budgets: z.record(z.string(), budgetState),
  models: z.record(z.string(), modelTotals),
});

export type SpendFile = z.infer<typeof spendFileSchema>;

/** Writes start at most this often: a call settles many times faster than a file can be synced and renamed. */
export const SPEND_WRITE_INTERVAL_MS = 100;

export function defaultSpendFile(auditDir: string, agent: string): string {
  return join(auditDir, `${agent}.spend.json`);
}

/**
 * Reads the spend file. A missing file is a fresh start; an unreadable, corrupt or foreign one stops the sidecar,
 * because starting from zero would hand the agent its budget a second time.
 */
export async function loadSpendFile(path: string, agent: string): Promise<SpendState | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `${path}: cannot read the spend file (${(err as NodeJS.ErrnoException).code ?? 'EIO'})`,
    );
  }
  let parsed: ReturnType<typeof spendFileSchema.safeParse>;
  try {
    parsed = spendFileSchema.safeParse(JSON.parse(text));
  } catch {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `${path}: the spend file is not JSON; fix or remove it`,
    );
  }
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `${path}: the spend file is invalid (${issue?.path.join('.') ?? ''}: ${issue?.message ?? ''}); fix or remove it`,
    );
  }
  if (parsed.data.agent !== agent) {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `${path}: the spend file belongs to agent "${parsed.data.agent}", not "${agent}"`,
    );
  }
  return { budgets: parsed.data.budgets, models: parsed.data.models };
}

/**
 * Writes the spend file after changes, coalescing them: at most one write is in flight, writes start at most every
 * `intervalMs`, and every change made meanwhile is picked up by exactly one more write. Each write goes to a
 * temporary file in the same directory, is synced, and is renamed over the old file, so a crash leaves either the
 * old state or the new one, and loses at most the changes of the last interval.
 */
export class SpendWriter {
  readonly #path: string;
  readonly #agent: string;
  readonly #state: () => SpendState;
  readonly #now: () => Date;
  readonly #onError: (err: unknown) => void;
  readonly #intervalMs: number;
  #dirty = false;
  #running: Promise<void> | undefined;
  #dirReady = false;
  #lastStart = Number.NEGATIVE_INFINITY;
  /** Set while flush() waits: no more waiting between writes. */
  #urgent = false;
  /** Ends the wait before the next write early. */
  #hurry: (() => void) | undefined;

  constructor(opts: {
    path: string;
    agent: string;
    state: () => SpendState;
    now: () => Date;
    onError: (err: unknown) => void;
    /** Least time between the starts of two writes; default SPEND_WRITE_INTERVAL_MS. */
    intervalMs?: number;
  }) {
    this.#intervalMs = opts.intervalMs ?? SPEND_WRITE_INTERVAL_MS;
    this.#path = opts.path;
    this.#agent = opts.agent;
    this.#state = opts.state;
    this.#now = opts.now;
    this.#onError = opts.onError;
  }

  /** Marks the state changed; a write follows soon. */
  schedule(): void {
    this.#dirty = true;
    this.#running ??= this.#drain();
  }

  /** Resolves once everything scheduled so far is on disk (or failed and was reported). */
  async flush(): Promise<void> {
    this.#urgent = true;
    try {
      while (this.#running) {
        this.#hurry?.();
        await this.#running;
      }
    } finally {
      this.#urgent = false;
    }
  }

  async #drain(): Promise<void> {
    try {
      while (this.#dirty) {
        // Let the rest of this tick's settlements, and those of the interval, join the write.
        const wait = this.#urgent ? 0 : Math.max(0, this.#lastStart + this.#intervalMs - performance.now());
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, wait);
          this.#hurry = done;
          function done() {
            clearTimeout(timer);
            resolve();
          }
        });
        this.#hurry = undefined;
        this.#lastStart = performance.now();
        this.#dirty = false;
        try {
          await this.#write();
        } catch (err) {
          this.#onError(err);
        }
      }
    } finally {
      this.#running = undefined;
    }
  }

  // Every step goes to the thread pool. A rename (or create) in a directory whose filesystem journal is busy with
  // the audit chain's fdatasync can wait for that commit: measured on the event loop, renames took up to 15 ms,
  // stalling every call in flight. A write starts at most every 100 ms, so the pool round trips cost nothing.
  async #write(): Promise<void> {
    const state = this.#state();
    const file: SpendFile = {
      version: 1,
      agent: this.#agent,
      updated: this.#now().toISOString(),
      budgets: { ...state.budgets },
      models: { ...state.models },
    };
    const data = `${JSON.stringify(file, null, 2)}\n`;
    const dir = dirname(this.#path);
    if (!this.#dirReady) {
      await mkdir(dir, { recursive: true });
      this.#dirReady = true;
    }
    const tmp = join(dir, `.${basename(this.#path)}.${randomUUID()}.tmp`);
    let handle: FileHandle | undefined;
    try {
      handle = await open(tmp, 'w', 0o600);
      await handle.writeFile(data, 'utf8');
      await handle.datasync();
      await handle.close();
      handle = undefined;
      await rename(tmp, this.#path);
    } catch (err) {
      await handle?.close().catch(() => {
        // the write already failed; that error is the one to report
      });
      await unlink(tmp).catch(() => {
        // never created, or already gone
      });
      throw err;
    }
  }
}
