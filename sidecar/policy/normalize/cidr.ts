// CIDR membership for the `address` condition; IPv4-mapped IPv6 addresses count as their IPv4 address.
import { type Cidr, cidrContains, parseCidr, parseIp } from './ip.ts';

export { parseCidr } from './ip.ts';

/** Whether CIDR membership can be decided for `ip`: an IP literal (IPv4-mapped IPv6 included). */
export function isIpAddress(ip: unknown): boolean {
  return typeof ip === 'string' && parseIp(ip) !== null;
}

/** A matcher over a list of CIDRs; undefined when any entry is not a valid CIDR. */
export function compileCidrList(cidrs: readonly string[]): ((ip: string) => boolean) | undefined {
  const ranges: Cidr[] = [];
  for (const c of cidrs) {
    const parsed = parseCidr(c);
    if (!parsed.ok) return undefined;
    ranges.push(parsed.cidr);
  }
  // The address is parsed once per call, not once per range.
  return (ip: string) => {
    const parsed = parseIp(ip);
    return parsed !== null && ranges.some((range) => cidrContains(range, parsed));
  };
}
