#!/usr/bin/env node
// Runs the compiled CLI when built; from a source checkout Node >= 22.18 runs the TypeScript directly.
import { existsSync } from 'node:fs';

const built = new URL('../dist/sidecar/cli/main.js', import.meta.url);
await import(existsSync(built) ? built.href : new URL('../sidecar/cli/main.ts', import.meta.url).href);
