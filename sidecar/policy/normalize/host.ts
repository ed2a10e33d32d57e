// Host names as policy compares them: WHATWG-normalised (lower case, IDNA, IPv4 forms canonical, IPv4-mapped IPv6 as
// its IPv4 address), and label globs.
import { formatIp, parseIp, unmapIp } from './ip.ts';

/** Normalises a bare host the way the URL parser would; undefined when it is not a valid host. */
export function normalizeHostName(raw: string): string | undefined {
  if (raw === '' || /[\\/\s@?#:\u0000-\u001f]/.test(raw.replace(/^\[.*\]$/, 'v6'))) return undefined;
  try {
    return canonicalHost(new URL(`http://${raw}/`).hostname);
  } catch {
    return undefined;
  }
}

/**
 * A WHATWG hostname as policy compares it: one trailing dot dropped, an empty label refused, and an IPv4-mapped IPv6
 * address (`[::ffff:a9fe:a9fe]`) written as the IPv4 address a dual-stack socket reaches with it (`169.254.169.254`),
 * so rules on IPv4 literals see every spelling. Only the policy's view changes: the proxy connects to what it pinned.
 */
export function canonicalHost(hostname: string): string | undefined {
  const host = hostname.endsWith('.') ? hostname.slice(0, -1) : hostname;
  if (host === '' || host.split('.').includes('')) return undefined;
  const ip = host.startsWith('[') ? parseIp(host.slice(1, -1)) : null;
  const v4 = ip && unmapIp(ip);
  return v4?.family === 4 ? formatIp(v4) : host;
}

const isWildcard = (label: string) => label === '*' || label === '**';

type ParsedGlob =
  | { readonly labels: readonly string[]; readonly ipv4: boolean }
  | 'bad-label'
  | 'not-a-dotted-quad';

/**
 * A glob whose literal labels are all numbers (`10.*.*.*`, `203.0.**`) is about IPv4 addresses: it matches IPv4
 * hosts only, never the name `10.0.attacker.example`, so it must fit a dotted quad (`**` still one or more labels).
 */
function parseGlob(pattern: string): ParsedGlob {
  const raw = pattern.toLowerCase().split('.');
  if (raw.some((l) => l === '' || (l.includes('*') && !isWildcard(l)))) return 'bad-label';
  const normalized = raw.map((l) => (isWildcard(l) ? l : normalizeLabel(l)));
  if (normalized.some((l) => l === undefined)) return 'bad-label';
  const labels = normalized as string[];
  const literals = labels.filter((l) => !isWildcard(l));
  const ipv4 = literals.length > 0 && literals.every((l) => /^[0-9]+$/.test(l));
  if (!ipv4) return { labels, ipv4 };
  const octets = literals.every((l) => String(Number(l)) === l && Number(l) <= 255);
  const count = labels.length === 4 || (labels.length < 4 && labels.includes('**'));
  return octets && count ? { labels, ipv4 } : 'not-a-dotted-quad';
}

/** Why a glob cannot be compiled (a partial or empty label, or an IPv4 glob no address fits); undefined if it can. */
export function hostGlobProblem(pattern: string): 'bad-label' | 'not-a-dotted-quad' | undefined {
  const g = parseGlob(pattern);
  return typeof g === 'string' ? g : undefined;
}

/**
 * Label glob: `*` stands for exactly one label, `**` for one or more, and only as whole labels.
 * `*.example.com` matches `api.example.com`, not `example.com` nor `a.b.example.com`.
 */
export function compileHostGlob(pattern: string): ((host: string) => boolean) | undefined {
  const g = parseGlob(pattern);
  if (typeof g === 'string') return undefined;
  const { labels, ipv4 } = g;
  return (host: string) => (!ipv4 || parseIp(host)?.family === 4) && matchLabels(host.split('.'), labels);
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
