// Normalises file paths to absolute POSIX segments so `starts_with` respects segment boundaries.

export type NormalizedPath = {
  readonly ok: true;
  readonly path: string;
  readonly segments: readonly string[];
};
export type PathFailure = { readonly ok: false; readonly why: string };

/**
 * Only absolute POSIX paths without NUL bytes normalise. `.` and `..` are resolved lexically
 * (`/..` stays `/`), repeated and trailing slashes collapse. Symlinks are out of reach here.
 */
export function normalizePath(raw: unknown): NormalizedPath | PathFailure {
  if (typeof raw !== 'string') return { ok: false, why: 'path is not a string' };
  if (raw.length === 0) return { ok: false, why: 'path is empty' };
  if (raw.includes('\0')) return { ok: false, why: 'path contains a NUL byte' };
  if (!raw.startsWith('/')) return { ok: false, why: 'path is not absolute' };
  const segments: string[] = [];
  for (const seg of raw.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') segments.pop();
    else segments.push(seg);
  }
  return { ok: true, path: `/${segments.join('/')}`, segments };
}

/** True when `prefix` equals `path` or is an ancestor directory of it. */
export function segmentsStartWith(path: readonly string[], prefix: readonly string[]): boolean {
  if (prefix.length > path.length) return false;
  for (let i = 0; i < prefix.length; i++) if (path[i] !== prefix[i]) return false;
  return true;
}
