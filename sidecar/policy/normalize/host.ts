// Host names as policy compares them: WHATWG-normalised (lower case, IDNA, IPv4 forms canonical), and label globs.

/** Normalises a bare host the way the URL parser would; undefined when it is not a valid host. */
export function normalizeHostName(raw: string): string | undefined {
  if (raw === '' || /[\\/\s@?#:\u0000-\u001f]/.test(raw.replace(/^\[.*\]$/, 'v6'))) return undefined;
  try {
    let host = new URL(`http://${raw}/`).hostname;
    if (host.endsWith('.')) host = host.slice(0, -1);
    return host === '' || host.split('.').includes('') ? undefined : host;
  } catch {
    return undefined;
  }
}

/**
 * Label glob: `*` stands for exactly one label, `**` for one or more, and only as whole labels.
 * `*.example.com` matches `api.example.com`, not `example.com` nor `a.b.example.com`.
 */
export function compileHostGlob(pattern: string): ((host: string) => boolean) | undefined {
  const labels = pattern.toLowerCase().split('.');
  if (labels.some((l) => l === '' || (l.includes('*') && l !== '*' && l !== '**'))) return undefined;
  const normalized = labels.map((l) => (l === '*' || l === '**' ? l : normalizeLabel(l)));
  if (normalized.some((l) => l === undefined)) return undefined;
  return (host: string) => matchLabels(host.split('.'), normalized as string[]);
}

/** One literal label, IDNA-normalised. Alone, a label like `10` would parse as an IPv4 number (`0.0.0.10`). */
function normalizeLabel(label: string): string | undefined {
  const host = normalizeHostName(`${label}.x`);
  return host?.endsWith('.x') && host.indexOf('.') === host.length - 2 ? host.slice(0, -2) : undefined;
}

/**
 * Whole-label match. Failed (host label, pattern label) positions are remembered: without that, several `**`
 * against a long agent-supplied host backtrack exponentially.
 */
function matchLabels(host: readonly string[], pat: readonly string[]): boolean {
  const failed = new Set<number>();
  const from = (hi: number, pi: number): boolean => {
    if (pi === pat.length) return hi === host.length;
    const key = hi * pat.length + pi;
    if (failed.has(key)) return false;
    const p = pat[pi] as string;
    let ok = false;
    if (p === '**') for (let k = hi + 1; k <= host.length && !ok; k++) ok = from(k, pi + 1);
    else ok = hi < host.length && (p === '*' || p === host[hi]) && from(hi + 1, pi + 1);
    if (!ok) failed.add(key);
    return ok;
  };
  return from(0, 0);
}
