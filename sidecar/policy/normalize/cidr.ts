// CIDR membership for the `address` condition; IPv4-mapped IPv6 addresses count as their IPv4 address.
import { BlockList, isIP } from 'node:net';

export function parseCidr(
  cidr: string,
): { net: string; prefix: number; family: 'ipv4' | 'ipv6' } | undefined {
  const slash = cidr.indexOf('/');
  const net = slash < 0 ? cidr : cidr.slice(0, slash);
  const fam = isIP(net);
  if (fam === 0) return undefined;
  const max = fam === 4 ? 32 : 128;
  const prefixText = slash < 0 ? String(max) : cidr.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText)) return undefined;
  const prefix = Number(prefixText);
  if (prefix > max) return undefined;
  return { net, prefix, family: fam === 4 ? 'ipv4' : 'ipv6' };
}

export function unmapIpv4(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  return m ? (m[1] as string) : ip;
}

/** Whether CIDR membership can be decided for `ip`: an IP literal (IPv4-mapped IPv6 included). */
export function isIpAddress(ip: unknown): boolean {
  return typeof ip === 'string' && isIP(unmapIpv4(ip)) !== 0;
}

/** A matcher over a list of CIDRs; undefined when any entry is not a CIDR. */
export function compileCidrList(cidrs: readonly string[]): ((ip: string) => boolean) | undefined {
  const list = new BlockList();
  for (const c of cidrs) {
    const p = parseCidr(c);
    if (!p) return undefined;
    list.addSubnet(p.net, p.prefix, p.family);
  }
  return (ip: string) => {
    const plain = unmapIpv4(ip);
    const fam = isIP(plain);
    if (fam === 0) return false;
    return list.check(plain, fam === 4 ? 'ipv4' : 'ipv6');
  };
}
