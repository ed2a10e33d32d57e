// Hop-by-hop headers (RFC 9110 §7.6.1): addressed to the next hop only, so no forwarding path passes them on.

// The standard set, plus the proxy-* headers, which are addressed to this sidecar and to nobody behind it.
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * A test for one message: true for the standard hop-by-hop names and for any name its `connection` header lists.
 * Names must be given in lower case.
 */
export function hopByHop(connection: string | string[] | undefined): (lowerName: string) => boolean {
  const named = new Set<string>();
  for (const v of ([] as string[]).concat(connection ?? [])) {
    for (const t of v.split(',')) {
      const name = t.trim().toLowerCase();
      if (name) named.add(name);
    }
  }
  return (lowerName) => HOP_BY_HOP.has(lowerName) || named.has(lowerName);
}
