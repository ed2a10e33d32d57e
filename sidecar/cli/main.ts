// The agent-sidecar command line: the only place that sets exit codes.
import { Command, CommanderError } from 'commander';
import { isSidecarError } from '../errors.ts';
import { approvalsCommand } from './approvals-command.ts';
import { auditCommand } from './audit-command.ts';
import { EXIT, processIo } from './io.ts';
import { evalCommand, policyCommand } from './policy-commands.ts';
import { runCommand } from './run-command.ts';

export function buildProgram(io = processIo()): Command {
  const program = new Command('agent-sidecar')
    .description('A per-agent policy sidecar: one agent, one policy, one audit chain.')
    .version('0.1.0')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.out(s.trimEnd()), writeErr: (s) => io.err(s.trimEnd()) });
  program.addCommand(policyCommand(io));
  program.addCommand(evalCommand(io));
  program.addCommand(runCommand(io));
  program.addCommand(auditCommand(io));
  program.addCommand(approvalsCommand(io));
  for (const c of program.commands) c.exitOverride();
  return program;
}

export async function main(argv: readonly string[]): Promise<void> {
  const io = processIo();
  try {
    await buildProgram(io).parseAsync(argv as string[], { from: 'user' });
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit 0; every other commander complaint is misuse.
      process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
      return;
    }
    const message = isSidecarError(err)
      ? `${err.code}: ${err.message}`
      : err instanceof Error
        ? err.message
        : String(err);
    io.fail(EXIT.usage, message);
  }
}

await main(process.argv.slice(2));
