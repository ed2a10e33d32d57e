// Reads policy and policy-test files from disk; the only I/O around the pure policy/ layer.
import { readdir, readFile, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { SidecarError } from './errors.ts';
import { type Diagnostic, formatDiagnostic, parseYamlWithSchema } from './policy/load.ts';
import { compilePolicy, type Policy } from './policy/policy.ts';
import { type PolicyTestFile, policyTestSchema } from './policy/policy-tests.ts';

export const isTestFile = (f: string) => /\.test\.ya?ml$/.test(f);
export const isPolicyFile = (f: string) => /\.ya?ml$/.test(f) && !isTestFile(f);

const errnoCode = (err: unknown) => (err as NodeJS.ErrnoException).code ?? 'EIO';

/** Expands files and directories (non-recursive) into a sorted list matching `keep`. */
export async function expandPaths(paths: readonly string[], keep: (f: string) => boolean): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) {
    const st = await stat(p).catch((err: unknown) => {
      throw new SidecarError('SIDECAR_ERR_CONFIG_INVALID', `cannot read ${p} (${errnoCode(err)})`);
    });
    if (st.isDirectory()) {
      const names = (await readdir(p)).filter(keep).sort();
      out.push(...names.map((n) => join(p, n)));
    } else out.push(p);
  }
  return out;
}

type ReadResult = { ok: true; text: string } | { ok: false; diagnostics: readonly Diagnostic[] };

/** Reads a file as text, or turns the failure into a positioned diagnostic like any other problem. */
async function readText(path: string): Promise<ReadResult> {
  try {
    return { ok: true, text: await readFile(path, 'utf8') };
  } catch (err) {
    return {
      ok: false,
      diagnostics: [{ file: path, line: 1, col: 1, message: `cannot read file (${errnoCode(err)})` }],
    };
  }
}

export type LoadResult = { ok: true; policy: Policy } | { ok: false; diagnostics: readonly Diagnostic[] };

export async function tryLoadPolicy(path: string): Promise<LoadResult> {
  const read = await readText(path);
  return read.ok ? compilePolicy(read.text, path) : read;
}

/** Loads, validates and compiles one policy; throws SIDECAR_ERR_POLICY_INVALID listing every problem. */
export async function loadPolicy(path: string): Promise<Policy> {
  const r = await tryLoadPolicy(path);
  if (!r.ok)
    throw new SidecarError('SIDECAR_ERR_POLICY_INVALID', r.diagnostics.map(formatDiagnostic).join('\n'));
  return r.policy;
}

export type TestFileResult =
  | { ok: true; tests: PolicyTestFile; policyPath: string }
  | { ok: false; diagnostics: readonly Diagnostic[] };

export async function loadPolicyTestFile(path: string): Promise<TestFileResult> {
  const read = await readText(path);
  if (!read.ok) return read;
  const parsed = parseYamlWithSchema(read.text, path, policyTestSchema);
  if (!parsed.ok) return parsed;
  const policyName = parsed.document.policy ?? basename(path).replace(/\.test\.ya?ml$/, '.yaml');
  return { ok: true, tests: parsed.document, policyPath: resolve(dirname(path), policyName) };
}
