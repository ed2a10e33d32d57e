// Reading an audit file back: filtered streaming of entries and a table for people. It does not verify.
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { AuditEntry } from './entry.ts';
import { parseEntry } from './entry.ts';

export interface AuditFilter {
  readonly agent?: string;
  readonly effect?: string;
  readonly kind?: string;
  /** Action type, e.g. `network`. */
  readonly action?: string;
  /** Entries at or after this instant. */
  readonly since?: Date;
  /** Entries strictly before this instant. */
  readonly until?: Date;
}

export function matchesFilter(entry: AuditEntry, filter: AuditFilter): boolean {
  if (filter.agent !== undefined && entry.agent !== filter.agent) return false;
  if (filter.effect !== undefined && entry.effect !== filter.effect) return false;
  if (filter.kind !== undefined && entry.kind !== filter.kind) return false;
  if (filter.action !== undefined && entry.action?.type !== filter.action) return false;
  if (filter.since !== undefined || filter.until !== undefined) {
    const ts = Date.parse(entry.ts);
    if (Number.isNaN(ts)) return false;
    if (filter.since !== undefined && ts < filter.since.getTime()) return false;
    if (filter.until !== undefined && ts >= filter.until.getTime()) return false;
  }
  return true;
}

/** Streams the entries of an audit file that match `filter`; lines that are not entries are skipped. */
export async function* queryAudit(path: string, filter: AuditFilter = {}): AsyncGenerator<AuditEntry> {
  const lines = createInterface({ input: createReadStream(path), crlfDelay: Number.POSITIVE_INFINITY });
  for await (const line of lines) {
    const entry = parseEntry(line);
    if (entry && matchesFilter(entry, filter)) yield entry;
  }
}

const COLUMNS = ['TS', 'SEQ', 'AGENT', 'KIND', 'ACTION', 'EFFECT', 'RULE', 'REASON'] as const;

// Entries may come from a tampered file; keep terminal control sequences out of the table.
function cell(value: string | number | null | undefined): string {
  if (value === null || value === undefined || value === '') return '-';
  return String(value).replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
}

/** A fixed-width table, one row per entry, for `audit query --format table`. */
export function formatAuditTable(entries: Iterable<AuditEntry>): string {
  const rows: string[][] = [[...COLUMNS]];
  for (const e of entries) {
    rows.push([e.ts, e.seq, e.agent, e.kind, e.action?.type, e.effect, e.rule, e.reason].map(cell));
  }
  const widths = COLUMNS.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
