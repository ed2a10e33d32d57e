// A CliIo that records what a command prints, for running CLI commands in-process.
import { Readable } from 'node:stream';
import type { CliIo } from '../../sidecar/cli/io.ts';

export interface CliRun {
  code: number | undefined;
  stdout: string;
  stderr: string;
}

/**
 * Collects stdout, stderr and the exit code into `result`; `fail` prints as the real CLI does (`agent-sidecar: …`).
 * With `ask`, the command runs at a terminal whose approver answers (given the question and the stdout so far);
 * without it there is no terminal.
 */
export function recordingIo(ask?: (question: string, shownSoFar: string) => Promise<string | undefined>): {
  io: CliIo;
  result: CliRun;
} {
  const result: CliRun = { code: undefined, stdout: '', stderr: '' };
  const io: CliIo = {
    out: (line) => {
      result.stdout += `${line}\n`;
    },
    err: (line) => {
      result.stderr += `${line}\n`;
    },
    stdin: Readable.from([]),
    setExit: (code) => {
      result.code = code;
    },
    fail: (code, message) => {
      result.stderr += `agent-sidecar: ${message}\n`;
      result.code = code;
    },
    ...(ask === undefined ? {} : { ask: (q: string) => ask(q, result.stdout) }),
  };
  return { io, result };
}
