// Reading a live audit file: the sidecar may be mid-write (usage records go out up to 20 ms after the answer), so
// only lines already ended by a newline are entries; a partial last line is the writer's, not a torn chain.
import type { AuditEntry } from '../../sidecar/audit/entry.ts';

export function completeAuditEntries(text: string): AuditEntry[] {
  return text
    .slice(0, text.lastIndexOf('\n') + 1)
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as AuditEntry);
}
