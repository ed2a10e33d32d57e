#!/usr/bin/env node
// Runs the compiled CLI when built; from a source checkout Node >= 22.18 runs the TypeScript directly.
import { existsSync, writeFileSync } from 'node:fs';

// Every command but `run` is a short-lived tool (audit query, policy check, approvals) that an operator may exec
// into the sidecar's container. If that container runs short of memory, the kernel's OOM killer takes the process
// with the highest score, by size alone the sidecar: the tool raises its own score first, before it loads anything
// (raising one's own score needs no privilege). Off Linux there is no score to raise.
if (process.argv[2] !== 'run') {
  try {
    writeFileSync('/proc/self/oom_score_adj', '1000');
  } catch {
    // No /proc/self/oom_score_adj here.
  }
}

const built = new URL('../dist/sidecar/cli/main.js', import.meta.url);
await import(existsSync(built) ? built.href : new URL('../sidecar/cli/main.ts', import.meta.url).href);
