// The CLI's view of the process: output streams and the exit code, injectable so commands are testable in-process.
import type { Readable } from 'node:stream';

export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  readonly stdin: Readable;
  setExit(code: number): void;
  /** Prints one line to stderr and sets the exit code. */
  fail(code: number, message: string): void;
}

export function processIo(): CliIo {
  return {
    out: (l) => process.stdout.write(`${l}\n`),
    err: (l) => process.stderr.write(`${l}\n`),
    stdin: process.stdin,
    setExit: (c) => {
      process.exitCode = c;
    },
    fail: (c, m) => {
      process.stderr.write(`agent-sidecar: ${m}\n`);
      process.exitCode = c;
    },
  };
}
