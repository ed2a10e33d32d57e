// The `audit` command: `audit verify` and `audit query`, and the exit codes they end with.
import { Command, InvalidArgumentError, Option } from 'commander';
import type { AuditEntry } from '../audit/entry.ts';
import type { AuditFilter } from '../audit/query.ts';
import { formatAuditTable, queryAudit } from '../audit/query.ts';
import type { VerifyResult } from '../audit/verify.ts';
import { verifyAuditFile } from '../audit/verify.ts';
import { ACTION_TYPES, EFFECTS } from '../policy/types.ts';
import type { CliIo } from './io.ts';
import { EXIT, processIo, terminalSafe as safe, terminalSafeJson } from './io.ts';

// Audit files hold what agents sent, and a damaged or forged file is exactly what these commands are for: nothing
// read from one, nor a path that names one, reaches the terminal unescaped (io.ts terminalSafe, terminalSafeJson).

function reason(err: unknown): string {
  return safe(err instanceof Error ? err.message : String(err));
}

function parseInstant(value: string): Date {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) throw new InvalidArgumentError('expected an ISO 8601 date or timestamp.');
  return date;
}

interface QueryOptions {
  readonly agent?: string;
  readonly effect?: string;
  readonly kind?: string;
  readonly action?: string;
  readonly since?: Date;
  readonly until?: Date;
  readonly format: 'jsonl' | 'table';
}

/**
 * Builds `audit verify <file>` and `audit query <file>`. Commander's own usage errors also end with exit code 2:
 * they are thrown as CommanderError after the message is printed, for the caller of parseAsync to swallow.
 */
export function auditCommand(io: CliIo = processIo()): Command {
  const audit = new Command('audit')
    .description('verify and query hash-chained audit logs')
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) })
    .exitOverride((err) => {
      io.setExit(err.exitCode === 0 ? EXIT.ok : EXIT.usage);
      throw err;
    });

  audit
    .command('verify')
    .description('check the hash chain and checkpoints; exit 0 intact, 1 damaged, 2 misuse or unreadable')
    .argument('<file>', 'audit file (<agent>.audit.jsonl)')
    .option('--checkpoints <file>', 'checkpoints file (default: the sibling <agent>.audit.checkpoints.jsonl)')
    .option(
      '--agent <name>',
      "the agent whose chain this is (default: <agent> of the file name, or the first entry's agent)",
    )
    .action(async (path: string, opts: { checkpoints?: string; agent?: string }) => {
      const file = safe(path);
      let result: VerifyResult;
      try {
        result = await verifyAuditFile(path, {
          ...(opts.checkpoints === undefined ? {} : { checkpointsPath: opts.checkpoints }),
          ...(opts.agent === undefined ? {} : { agent: opts.agent }),
        });
      } catch (err) {
        io.fail(EXIT.usage, `${file}: cannot verify: ${reason(err)}`);
        return;
      }
      if (result.ok) {
        io.out(`${file}: ok: ${result.count} entries, head ${result.head.hash}`);
        io.setExit(EXIT.ok);
      } else {
        // verify.ts escapes what it quotes from the files; escaping again here covers any message it did not.
        io.err(`${file}:${result.line}: ${result.kind}: ${safe(result.message)}`);
        io.setExit(EXIT.failure);
      }
    });

  audit
    .command('query')
    .description(
      'print the entries that match every filter given (does not verify; run audit verify for that)',
    )
    .argument('<file>', 'audit file (<agent>.audit.jsonl)')
    .option('--agent <name>', 'entries of this agent')
    .addOption(new Option('--effect <effect>', 'entries with this effect').choices(EFFECTS))
    .option(
      '--kind <kind>',
      'entries from this decision source (evaluate, proxy, tool, model, approval, ...)',
    )
    .addOption(new Option('--action <type>', 'entries for this action type').choices(ACTION_TYPES))
    .option('--since <time>', 'entries at or after this time (ISO 8601)', parseInstant)
    .option('--until <time>', 'entries before this time (ISO 8601)', parseInstant)
    .addOption(new Option('--format <format>', 'output format').choices(['jsonl', 'table']).default('jsonl'))
    .action(async (path: string, opts: QueryOptions) => {
      const file = safe(path);
      const { format, ...filter } = opts;
      const table: AuditEntry[] = [];
      let lines: string[] = [];
      try {
        for await (const entry of queryAudit(path, filter satisfies AuditFilter)) {
          if (format === 'table') {
            table.push(entry);
            continue;
          }
          // Still one valid JSON object per line for jq, with the same values.
          lines.push(terminalSafeJson(entry));
          if (lines.length >= 256) {
            io.out(lines.join('\n'));
            lines = [];
          }
        }
      } catch (err) {
        if (lines.length > 0) io.out(lines.join('\n'));
        io.fail(EXIT.usage, `${file}: cannot read: ${reason(err)}`);
        return;
      }
      if (format === 'table') io.out(formatAuditTable(table));
      else if (lines.length > 0) io.out(lines.join('\n'));
      io.setExit(EXIT.ok);
    });

  return audit;
}
