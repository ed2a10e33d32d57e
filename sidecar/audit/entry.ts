// The audit entry and checkpoint shapes, the hash rule that links entries, and parsing of stored lines.
import { canonicalJson, sha256Hex } from '../policy/canonical.ts';
import type { Action, Effect } from '../policy/types.ts';

/** `prev` of the first entry in every chain. */
export const GENESIS_HASH = '0'.repeat(64);

/** Where a decision came from. Open-ended so new enforcement points need no change here. */
export type AuditKind =
  | 'evaluate'
  | 'proxy'
  | 'tool'
  | 'model'
  | 'approval'
  | 'chain_recovery'
  | (string & {});

/** What the caller hands to the chain: a decision, already built. */
export interface AuditRecord {
  readonly decision_id: string;
  readonly agent: string;
  readonly kind: AuditKind;
  /** The action decided on; null for entries the chain writes about itself. */
  readonly action: Action | null;
  readonly effect: Effect | null;
  readonly rule: string | null;
  readonly reason: string;
  readonly policy_digest: string | null;
  readonly extra?: Readonly<Record<string, unknown>>;
}

export interface AuditInstance {
  readonly hostname: string;
  readonly pid: number;
}

/** One line of `<agent>.audit.jsonl`. */
export interface AuditEntry extends AuditRecord {
  readonly seq: number;
  readonly ts: string;
  readonly instance: AuditInstance;
  readonly prev: string;
  readonly hash: string;
}

export type UnhashedEntry = Omit<AuditEntry, 'hash'>;

/** One line of `<agent>.audit.checkpoints.jsonl`: the chain had `count` entries ending in `head`. */
export interface Checkpoint {
  readonly ts: string;
  readonly agent: string;
  readonly count: number;
  readonly head: string;
}

export interface ChainHead {
  readonly count: number;
  readonly hash: string;
}

export function auditFileName(agent: string): string {
  return `${agent}.audit.jsonl`;
}

export function checkpointFileName(agent: string): string {
  return `${agent}.audit.checkpoints.jsonl`;
}

/** The sibling checkpoints file of an audit file, by naming convention. */
export function checkpointPathFor(auditPath: string): string {
  return auditPath.endsWith('.audit.jsonl')
    ? `${auditPath.slice(0, -'.jsonl'.length)}.checkpoints.jsonl`
    : `${auditPath}.checkpoints.jsonl`;
}

/** The hash covers every member except `hash` itself, `prev` included, so each entry commits to its past. */
export function hashEntry(entry: UnhashedEntry | AuditEntry): string {
  if (!('hash' in entry)) return sha256Hex(canonicalJson(entry));
  const { hash: _ignored, ...rest } = entry;
  return sha256Hex(canonicalJson(rest));
}

/**
 * Hashes and serialises a new entry in one pass: the stored line is the canonical JSON that was hashed, with
 * `hash` appended as the last member. Verification re-derives the canonical form from the parsed line.
 */
export function sealEntry(unhashed: UnhashedEntry): { entry: AuditEntry; line: string } {
  const canonical = canonicalJson(unhashed);
  const hash = sha256Hex(canonical);
  return { entry: Object.freeze({ ...unhashed, hash }), line: `${canonical.slice(0, -1)},"hash":"${hash}"}` };
}

/** A stored line for an entry built elsewhere (tests, tools): the same layout `sealEntry` writes. */
export function serializeEntry(entry: AuditEntry): string {
  const { hash, ...rest } = entry;
  return `${canonicalJson(rest).slice(0, -1)},"hash":"${hash}"}`;
}

const HEX64 = /^[0-9a-f]{64}$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isStringOrNull(v: unknown): boolean {
  return v === null || typeof v === 'string';
}

/** Parses one stored line; undefined when it is not JSON or lacks the members every entry carries. */
export function parseEntry(line: string): AuditEntry | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!isObject(value)) return undefined;
  const v = value;
  const instance = v['instance'];
  const ok =
    Number.isSafeInteger(v['seq']) &&
    (v['seq'] as number) >= 1 &&
    typeof v['ts'] === 'string' &&
    typeof v['decision_id'] === 'string' &&
    typeof v['agent'] === 'string' &&
    typeof v['kind'] === 'string' &&
    (v['action'] === null || isObject(v['action'])) &&
    isStringOrNull(v['effect']) &&
    isStringOrNull(v['rule']) &&
    typeof v['reason'] === 'string' &&
    isStringOrNull(v['policy_digest']) &&
    isObject(instance) &&
    typeof instance['hostname'] === 'string' &&
    typeof instance['pid'] === 'number' &&
    (v['extra'] === undefined || isObject(v['extra'])) &&
    typeof v['prev'] === 'string' &&
    HEX64.test(v['prev']) &&
    typeof v['hash'] === 'string' &&
    HEX64.test(v['hash']);
  return ok ? (v as unknown as AuditEntry) : undefined;
}

// An ISO-8601 timestamp in UTC, as toISOString writes the chain's own: 2026-01-01T12:00:30.000Z (fraction optional).
const ISO_UTC = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z$/;

/** True for an ISO-8601 UTC timestamp of a real instant (no 30 February, no 24:00). */
export function isIsoUtcTimestamp(ts: string): boolean {
  if (!ISO_UTC.test(ts)) return false;
  const ms = Date.parse(ts);
  return !Number.isNaN(ms) && new Date(ms).toISOString().slice(0, 19) === ts.slice(0, 19);
}

/**
 * Parses one checkpoint line; undefined when malformed. `ts` must be an ISO-8601 UTC timestamp: verify quotes it to
 * the operator, and free text there let a forged checkpoint rewrite the verdict line on the terminal.
 */
export function parseCheckpoint(line: string): Checkpoint | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!isObject(value)) return undefined;
  const { ts, agent, count, head } = value;
  if (typeof ts !== 'string' || !isIsoUtcTimestamp(ts) || typeof agent !== 'string') return undefined;
  if (!Number.isSafeInteger(count) || (count as number) < 0) return undefined;
  if (typeof head !== 'string' || !HEX64.test(head)) return undefined;
  return { ts, agent, count: count as number, head };
}
