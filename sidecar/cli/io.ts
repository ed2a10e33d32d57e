// The CLI's view of the process: output streams, the exit code and the operator's terminal, injectable so commands
// are testable in-process.
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';

export const EXIT = { ok: 0, failure: 1, usage: 2 } as const;

export interface CliIo {
  out(line: string): void;
  err(line: string): void;
  readonly stdin: Readable;
  setExit(code: number): void;
  /** Prints one line to stderr and sets the exit code. */
  fail(code: number, message: string): void;
  /**
   * Asks the person at the terminal: prints `question` (no newline) and resolves to the line they type, or undefined
   * when they end the input (Ctrl-D, Ctrl-C). Absent when there is no person to ask (stdin or stdout is not a
   * terminal): a command that needs a confirmation must then refuse, never assume the answer.
   */
  readonly ask?: ((question: string) => Promise<string | undefined>) | undefined;
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
    ask: process.stdin.isTTY && process.stdout.isTTY ? askOnTerminal : undefined,
  };
}

function askOnTerminal(question: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: true });
    let answered = false;
    // Ctrl-C at the prompt is "no", not a hang (readline only pauses on SIGINT when nobody listens).
    rl.on('SIGINT', () => rl.close());
    rl.on('close', () => {
      if (!answered) {
        process.stdout.write('\n');
        resolve(undefined);
      }
    });
    rl.question(question, (line) => {
      answered = true;
      rl.close();
      resolve(line);
    });
  });
}

export { clip, terminalSafe, terminalSafeJson } from '../terminal-safe.ts';
