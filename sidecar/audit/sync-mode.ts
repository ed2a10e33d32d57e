// The audit chain's durability modes: a module of its own so the CLI can offer them without loading the runtime.

/**
 * How far an entry has got before its append resolves (and the action it records may go ahead):
 * - `always`: written and fdatasync'd (one sync per batch). Survives power loss; every decision waits for the disk.
 * - `interval`: written (a failed write is still a DENY), and fdatasync'd in the background within `syncIntervalMs`.
 *   Survives a crash of the process; a crash of the machine can lose the entries of the last interval. A failed
 *   background sync stops the chain: every later append is refused, so every later decision is DENY.
 * - `never`: written, never synced by the sidecar (the kernel writes it back in its own time).
 */
export type AuditSyncMode = 'always' | 'interval' | 'never';
export const AUDIT_SYNC_MODES: readonly AuditSyncMode[] = ['always', 'interval', 'never'];
export const DEFAULT_AUDIT_SYNC: AuditSyncMode = 'interval';
export const DEFAULT_SYNC_INTERVAL_MS = 20;
