// Holds the one compiled policy in force and swaps it atomically on reload; an invalid new file never replaces it.
import { type FSWatcher, type Stats, unwatchFile, watch, watchFile } from 'node:fs';
import { basename, dirname } from 'node:path';
import type { Logger } from 'pino';
import { SidecarError } from '../errors.ts';
import { formatDiagnostic } from '../policy/load.ts';
import type { Policy } from '../policy/policy.ts';
import { tryLoadPolicy } from '../policy-file.ts';
import type { Metrics } from './metrics.ts';

export type ReloadResult = { ok: true; digest: string; changed: boolean } | { ok: false; problems: string[] };

export class PolicyHolder {
  #current: Policy;
  readonly #path: string;
  readonly #logger: Logger;
  readonly #metrics: Metrics;
  #watcher: FSWatcher | undefined;
  #polling: ((curr: Stats, prev: Stats) => void) | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #reloading: Promise<ReloadResult> | undefined;
  /** A trigger that arrived while a reload ran: that reload may have read the file before the change it signals. */
  #again: Promise<ReloadResult> | undefined;

  private constructor(policy: Policy, path: string, logger: Logger, metrics: Metrics) {
    this.#current = policy;
    this.#path = path;
    this.#logger = logger;
    this.#metrics = metrics;
  }

  static async load(path: string, logger: Logger, metrics: Metrics): Promise<PolicyHolder> {
    const r = await tryLoadPolicy(path);
    if (!r.ok)
      throw new SidecarError('SIDECAR_ERR_POLICY_INVALID', r.diagnostics.map(formatDiagnostic).join('\n'));
    return new PolicyHolder(r.policy, path, logger, metrics);
  }

  get current(): Policy {
    return this.#current;
  }

  /**
   * Load, validate, compile, then swap. A trigger during a reload queues one more reload after it (shared by every
   * trigger that arrives meanwhile), so the file as it stood at the last trigger is always the one read last.
   */
  reload(trigger: string): Promise<ReloadResult> {
    if (this.#reloading === undefined) {
      this.#reloading = this.#doReload(trigger).finally(() => {
        this.#reloading = undefined;
      });
      return this.#reloading;
    }
    this.#again ??= this.#reloading
      .catch(() => undefined)
      .then(() => {
        this.#again = undefined;
        return this.reload(trigger);
      });
    return this.#again;
  }

  async #doReload(trigger: string): Promise<ReloadResult> {
    const r = await tryLoadPolicy(this.#path);
    if (!r.ok) {
      const problems = r.diagnostics.map(formatDiagnostic);
      this.#metrics.reloads.inc({ result: 'rejected' });
      this.#logger.error(
        { trigger, problems, policy_digest: this.#current.digest },
        'policy reload refused; old policy keeps serving',
      );
      return { ok: false, problems };
    }
    // The sidecar's identity is fixed at start: a file naming another agent is refused, not adopted.
    if (r.policy.agent !== this.#current.agent) {
      const problems = [
        `${this.#path}: agent changed from "${this.#current.agent}" to "${r.policy.agent}"; restart to change identity`,
      ];
      this.#metrics.reloads.inc({ result: 'rejected' });
      this.#logger.error({ trigger, problems }, 'policy reload refused; old policy keeps serving');
      return { ok: false, problems };
    }
    const changed = r.policy.digest !== this.#current.digest;
    this.#current = r.policy;
    this.#metrics.reloads.inc({ result: changed ? 'applied' : 'unchanged' });
    this.#logger.info(
      { trigger, policy_digest: r.policy.digest, changed, rules: r.policy.rules.length },
      'policy reloaded',
    );
    return { ok: true, digest: r.policy.digest, changed };
  }

  /**
   * Watch the policy's directory: editors and orchestrators replace files by rename, which a file watch misses. And
   * poll the path's status every `pollMs` (following symlinks), which sees what a directory watch cannot: the file
   * behind a symlink into another directory, a swapped directory symlink, and a watcher the system refused
   * (ENOSPC, the inotify limit). The file is read again once at the start, for a change made while the sidecar
   * was starting (after its first read, before this watch).
   */
  watch(debounceMs = 150, pollMs = 2_000): void {
    if (this.#watcher || this.#polling) return;
    const name = basename(this.#path);
    const trigger = (why: string) => {
      clearTimeout(this.#debounce);
      this.#debounce = setTimeout(() => void this.reload(why), debounceMs);
    };
    this.#polling = (curr: Stats, prev: Stats) => {
      if (curr.ino !== prev.ino || curr.mtimeMs !== prev.mtimeMs || curr.size !== prev.size) trigger('poll');
    };
    watchFile(this.#path, { interval: pollMs, persistent: false }, this.#polling);
    void this.reload('watch-start');
    try {
      this.#watcher = watch(dirname(this.#path), { persistent: false }, (_event, file) => {
        if (file !== null && file !== name && !String(file).startsWith('..')) return;
        trigger('watch');
      });
      this.#watcher.on('error', (err) =>
        this.#logger.warn(
          { err: err.message },
          'policy directory watch failed; polling and SIGHUP still reload',
        ),
      );
    } catch (err) {
      this.#logger.warn(
        { err: (err as Error).message },
        'policy directory watch unavailable; polling and SIGHUP still reload',
      );
    }
  }

  close(): void {
    clearTimeout(this.#debounce);
    this.#watcher?.close();
    this.#watcher = undefined;
    if (this.#polling) unwatchFile(this.#path, this.#polling);
    this.#polling = undefined;
  }
}
