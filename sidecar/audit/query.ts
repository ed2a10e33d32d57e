// Reading an audit file back: filtered streaming of entries and a table for people. It does not verify.
import { createReadStream } from 'node:fs';
import { clip, terminalSafe } from '../terminal-safe.ts';
import { textLines } from '../text-lines.ts';
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
  // Split at line feeds only, as the chain writes them (see textLines: an agent's U+2028 must not hide its entry).
  for await (const line of textLines(createReadStream(path))) {
    const entry = parseEntry(line);
    if (entry && matchesFilter(entry, filter)) yield entry;
  }
}

const COLUMNS = ['TS', 'SEQ', 'AGENT', 'KIND', 'ACTION', 'EFFECT', 'RULE', 'REASON'] as const;

/** The widest a cell gets: one agent-chosen value must not push the other columns off the screen. */
export const AUDIT_CELL_WIDTH = 40;

// Entries hold what agents sent and may come from a tampered file, whose values need not even have their types
// (an action `type` of {"toString":1} made String() throw). Every value is printed, non-strings as JSON, with the
// control, format and separator characters escaped (the approvals CLI's escaper) and cut to AUDIT_CELL_WIDTH.
function cell(value: unknown): string {
  if (value === null || value === undefined || value === '') return '-';
  let text: string;
  if (typeof value === 'string') text = value;
  else if (typeof value === 'number' || typeof value === 'boolean') text = String(value);
  else {
    try {
      text = JSON.stringify(value) ?? typeof value;
    } catch {
      text = typeof value;
    }
  }
  return clip(terminalSafe(text), AUDIT_CELL_WIDTH);
}

/** A fixed-width table, one row per entry, for `audit query --format table`. Never throws on an entry. */
export function formatAuditTable(entries: Iterable<AuditEntry>): string {
  const rows: string[][] = [[...COLUMNS]];
  for (const e of entries) {
    const action: unknown = e.action;
    const type =
      typeof action === 'object' && action !== null ? (action as { type?: unknown }).type : undefined;
    rows.push([e.ts, e.seq, e.agent, e.kind, type, e.effect, e.rule, e.reason].map(cell));
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
