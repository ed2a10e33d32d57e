// Host names as policy compares them: WHATWG-normalised (lower case, IDNA, IPv4 forms canonical), and label globs.

/** Normalises a bare host the way the URL parser would; undefined when it is not a valid host. */
export function normalizeHostName(raw: string): string | undefined {
  if (raw === '' || /[\\/\s@?#:\u0000-\u001f]/.test(raw.replace(/^\[.*\]$/, 'v6'))) return undefined;
  try {
    let host = new URL(`http://${raw}/`).hostname;
    if (host.endsWith('.')) host = host.slice(0, -1);
    return host === '' ? undefined : host;
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
  const literal = labels.filter((l) => l !== '*' && l !== '**');
  if (literal.some((l) => normalizeHostName(l) === undefined)) return undefined;
  const normalized = labels.map((l) => (l === '*' || l === '**' ? l : (normalizeHostName(l) as string)));
  return (host: string) => matchLabels(host.split('.'), 0, normalized, 0);
}

function matchLabels(host: readonly string[], hi: number, pat: readonly string[], pi: number): boolean {
  if (pi === pat.length) return hi === host.length;
  const p = pat[pi] as string;
  if (p === '**') {
    for (let k = hi + 1; k <= host.length; k++) if (matchLabels(host, k, pat, pi + 1)) return true;
    return false;
  }
  if (hi === host.length) return false;
  if (p === '*' || p === host[hi]) return matchLabels(host, hi + 1, pat, pi + 1);
  return false;
}
