// The address guard end to end: host parsing over the SSRF corpus, resolution with injected and real lookups,
// own-listener refusal against real sockets on port 0, and pinning that survives a name that never resolves.
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo, Server } from 'node:net';
import { connect, createServer } from 'node:net';
import { networkInterfaces } from 'node:os';
import { Client } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import type { GuardResolution, HostLookup, LookupAnswer } from '../../../sidecar/proxy/address-guard.ts';
import { AddressGuard, normalizeHost, pinnedLookup } from '../../../sidecar/proxy/address-guard.ts';
import type { AddressKind } from '../../../sidecar/proxy/ip-classify.ts';
import { classifyAddress } from '../../../sidecar/proxy/ip-classify.ts';

interface HostCase {
  note: string;
  host: string;
  ip: string;
  kind: AddressKind;
  embedded?: string;
}
interface NameCase {
  note: string;
  host: string;
  want: string;
}
interface InvalidHostCase {
  note: string;
  host: string;
}

const corpus = parse(readFileSync(new URL('../../fixtures/ssrf-corpus.yaml', import.meta.url), 'utf8')) as {
  hosts: HostCase[];
  names: NameCase[];
  invalid_hosts: InvalidHostCase[];
};

const UNCONNECTABLE: ReadonlySet<AddressKind> = new Set(['unspecified', 'multicast', 'broadcast']);

/** A lookup that records the names it was asked for and answers from a table. */
function scriptedLookup(table: Record<string, ReadonlyArray<LookupAnswer> | Error | 'hang'>): {
  lookup: HostLookup;
  asked: string[];
} {
  const asked: string[] = [];
  const lookup: HostLookup = (host) => {
    asked.push(host);
    const answer = table[host];
    if (answer === undefined)
      return Promise.reject(Object.assign(new Error(`no entry for ${host}`), { code: 'ENOTFOUND' }));
    if (answer === 'hang') return new Promise(() => {});
    if (answer instanceof Error) return Promise.reject(answer);
    return Promise.resolve(answer);
  };
  return { lookup, asked };
}

const v4 = (address: string): LookupAnswer => ({ address, family: 4 });
const v6 = (address: string): LookupAnswer => ({ address, family: 6 });

describe('normalizeHost', () => {
  it('corpus entries are strings (YAML would read 10.1 as a number)', () => {
    for (const c of [...corpus.hosts, ...corpus.names, ...corpus.invalid_hosts]) {
      expect(typeof c.host, c.note).toBe('string');
    }
    for (const c of corpus.hosts) expect(typeof c.ip, c.note).toBe('string');
  });

  it.each(corpus.hosts.map((c) => [c.note, c] as const))('IP literal: %s', (_note, c) => {
    const got = normalizeHost(c.host);
    expect(got).toEqual({ ok: true, host: c.ip.includes(':') ? `[${c.ip}]` : c.ip, ip: c.ip });
    const want = c.embedded === undefined ? { kind: c.kind } : { kind: c.kind, embedded: c.embedded };
    expect(classifyAddress(c.ip)).toEqual(want);
  });

  it.each(corpus.names.map((c) => [c.note, c] as const))('name: %s', (_note, c) => {
    expect(normalizeHost(c.host)).toEqual({ ok: true, host: c.want });
  });

  it.each(corpus.invalid_hosts.map((c) => [c.note, c] as const))('refused: %s', (_note, c) => {
    expect(normalizeHost(c.host)).toEqual({ ok: false });
  });

  it('is idempotent on its own output', () => {
    for (const c of [...corpus.hosts, ...corpus.names]) {
      const first = normalizeHost(c.host);
      expect(first.ok, c.note).toBe(true);
      if (first.ok) expect(normalizeHost(first.host), c.note).toEqual(first);
    }
  });
});

describe('AddressGuard.resolve: IP literals never reach DNS', () => {
  const { lookup, asked } = scriptedLookup({});
  const guard = new AddressGuard({ lookup });

  it.each(corpus.hosts.map((c) => [c.note, c] as const))('%s', async (_note, c) => {
    const got = await guard.resolve(c.host, 443);
    if (UNCONNECTABLE.has(c.kind)) {
      expect(got).toMatchObject({ ok: false, reason: 'invalid_host' });
    } else {
      expect(got).toEqual({
        ok: true,
        host: c.ip.includes(':') ? `[${c.ip}]` : c.ip,
        addresses: [{ address: c.ip, family: c.ip.includes(':') ? 6 : 4, cls: classifyAddress(c.ip) }],
        pinned: c.ip,
        pinnedFamily: c.ip.includes(':') ? 6 : 4,
        allPublic: c.kind === 'public',
      });
    }
    expect(asked).toEqual([]);
  });

  it.each(corpus.invalid_hosts.map((c) => [c.note, c] as const))('refused: %s', async (_note, c) => {
    expect(await guard.resolve(c.host, 443)).toMatchObject({ ok: false, reason: 'invalid_host' });
    expect(asked).toEqual([]);
  });
});

interface NameResolutionCase {
  note: string;
  host: string;
  port?: number;
  want: Partial<Extract<GuardResolution, { ok: true }>> & { kinds?: AddressKind[] };
}
interface NameFailureCase {
  note: string;
  host: string;
  port?: number;
  reason: 'dns_failed' | 'invalid_host';
  detail: RegExp;
}

describe('AddressGuard.resolve: names, through an injected lookup', () => {
  const { lookup, asked } = scriptedLookup({
    'internal.example': [v4('127.0.0.1')],
    'mixed.example': [v4('8.8.8.8'), v4('10.0.0.1')],
    'private-first.example': [v4('10.0.0.1'), v4('8.8.8.8')],
    'public.example': [v4('93.184.216.34'), v6('2606:2800:220:1:248:1893:25c8:1946')],
    'metadata.example': [v4('169.254.169.254')],
    'mapped.example': [v6('::ffff:127.0.0.1')],
    'nat64.example': [v6('64:ff9b::a9fe:a9fe')],
    'link-local.example': [v6('fe80::1%eth0')],
    'sinkhole.example': [v4('0.0.0.0'), v6('::')],
    'sinkhole-then-public.example': [v4('0.0.0.0'), v4('8.8.8.8')],
    'garbage.example': [v4('0x7f.1'), v4('8.8.8.8')],
    'only-garbage.example': [v4('not-an-address')],
    'empty.example': [],
    'servfail.example': Object.assign(new Error('queryA ESERVFAIL'), { code: 'ESERVFAIL' }),
    'hang.example': 'hang',
    'xn--bcher-kva.de': [v4('8.8.4.4')],
  });
  const guard = new AddressGuard({ lookup, lookupTimeoutMs: 20 });

  const resolutions: NameResolutionCase[] = [
    {
      note: 'allowed name resolving to loopback is reported, not hidden',
      host: 'internal.example',
      want: { pinned: '127.0.0.1', allPublic: false, kinds: ['loopback'] },
    },
    {
      note: 'mixed answer, public first: pinned public, yet not all public',
      host: 'mixed.example',
      want: { pinned: '8.8.8.8', allPublic: false, kinds: ['public', 'private'] },
    },
    {
      note: 'mixed answer, private first: resolver order kept',
      host: 'private-first.example',
      want: { pinned: '10.0.0.1', allPublic: false, kinds: ['private', 'public'] },
    },
    {
      note: 'all public, both families',
      host: 'public.example',
      want: { pinned: '93.184.216.34', pinnedFamily: 4, allPublic: true, kinds: ['public', 'public'] },
    },
    {
      note: 'metadata address',
      host: 'metadata.example',
      want: { allPublic: false, kinds: ['link_local'] },
    },
    {
      note: 'mapped loopback in an AAAA answer',
      host: 'mapped.example',
      want: { pinned: '::ffff:127.0.0.1', pinnedFamily: 6, allPublic: false, kinds: ['loopback'] },
    },
    {
      note: 'NAT64 metadata in an AAAA answer',
      host: 'nat64.example',
      want: { allPublic: false, kinds: ['link_local'] },
    },
    {
      note: 'zone id kept on the pinned address',
      host: 'link-local.example',
      want: { pinned: 'fe80::1%eth0', allPublic: false, kinds: ['link_local'] },
    },
    {
      note: 'sinkhole first is skipped when pinning but still counts',
      host: 'sinkhole-then-public.example',
      want: { pinned: '8.8.8.8', allPublic: false, kinds: ['unspecified', 'public'] },
    },
    {
      note: 'a resolver answer that is not a canonical IP is invalid, never pinned',
      host: 'garbage.example',
      want: { pinned: '8.8.8.8', allPublic: false, kinds: ['invalid', 'public'] },
    },
    {
      note: 'the lookup sees the canonical name',
      host: 'BÜCHER.de.',
      want: { host: 'xn--bcher-kva.de', pinned: '8.8.4.4', allPublic: true, kinds: ['public'] },
    },
  ];

  it.each(resolutions.map((c) => [c.note, c] as const))('%s', async (_note, c) => {
    const got = await guard.resolve(c.host, c.port ?? 443);
    expect(got.ok).toBe(true);
    if (!got.ok) return;
    const { kinds, ...rest } = c.want;
    expect(got).toMatchObject(rest);
    if (kinds) expect(got.addresses.map((a) => a.cls.kind)).toEqual(kinds);
    expect(got.addresses.map((a) => a.address)).toContain(got.pinned);
  });

  const failures: NameFailureCase[] = [
    { note: 'NXDOMAIN', host: 'nowhere.example', reason: 'dns_failed', detail: /ENOTFOUND/ },
    { note: 'SERVFAIL', host: 'servfail.example', reason: 'dns_failed', detail: /ESERVFAIL/ },
    {
      note: 'lookup that never answers times out',
      host: 'hang.example',
      reason: 'dns_failed',
      detail: /timed out/,
    },
    { note: 'empty answer', host: 'empty.example', reason: 'dns_failed', detail: /no addresses/ },
    {
      note: 'only unconnectable addresses',
      host: 'sinkhole.example',
      reason: 'dns_failed',
      detail: /no address/,
    },
    {
      note: 'only invalid addresses',
      host: 'only-garbage.example',
      reason: 'dns_failed',
      detail: /no address/,
    },
    { note: 'port 0', host: 'public.example', port: 0, reason: 'invalid_host', detail: /port/ },
    { note: 'port above 65535', host: 'public.example', port: 65536, reason: 'invalid_host', detail: /port/ },
    { note: 'fractional port', host: 'public.example', port: 1.5, reason: 'invalid_host', detail: /port/ },
  ];

  it.each(failures.map((c) => [c.note, c] as const))('%s', async (_note, c) => {
    const got = await guard.resolve(c.host, c.port ?? 443);
    expect(got).toMatchObject({ ok: false, reason: c.reason });
    if (!got.ok) expect(got.detail).toMatch(c.detail);
  });

  it('resolves each name once per call', async () => {
    const before = asked.length;
    await guard.resolve('mixed.example', 443);
    expect(asked.slice(before)).toEqual(['mixed.example']);
  });

  it('requests that arrive while a name is being looked up share that lookup; later ones look it up again', async () => {
    const calls: string[] = [];
    let answer: (a: LookupAnswer[]) => void = () => {};
    const shared = new AddressGuard({
      lookup: (host) => {
        calls.push(host);
        return new Promise((resolve) => {
          answer = resolve;
        });
      },
    });
    const first = shared.resolve('rebind.example', 443);
    const second = shared.resolve('REBIND.example.', 443);
    await new Promise((resolve) => setImmediate(resolve));
    answer([v4('8.8.8.8')]);
    expect(await first).toMatchObject({ ok: true, pinned: '8.8.8.8' });
    expect(await second).toMatchObject({ ok: true, pinned: '8.8.8.8' });
    expect(calls).toEqual(['rebind.example']);

    // Landed answers are not kept: the next request asks again and is judged on the new answer alone.
    const third = shared.resolve('rebind.example', 443);
    await new Promise((resolve) => setImmediate(resolve));
    answer([v4('127.0.0.1')]);
    expect(await third).toMatchObject({ ok: true, pinned: '127.0.0.1', allPublic: false });
    expect(calls).toEqual(['rebind.example', 'rebind.example']);
  });

  it('a shared lookup that fails fails every request that joined it', async () => {
    let fail: (err: Error) => void = () => {};
    const shared = new AddressGuard({
      lookup: () =>
        new Promise((_resolve, reject) => {
          fail = reject;
        }),
    });
    const both = [shared.resolve('down.example', 443), shared.resolve('down.example', 443)];
    await new Promise((resolve) => setImmediate(resolve));
    fail(Object.assign(new Error('no such name'), { code: 'ENOTFOUND' }));
    for (const got of await Promise.all(both)) expect(got).toMatchObject({ ok: false, reason: 'dns_failed' });
  });

  it('a lookup that throws synchronously is a DNS failure, not an exception', async () => {
    const throwing = new AddressGuard({
      lookup: () => {
        throw new Error('resolver exploded');
      },
    });
    expect(await throwing.resolve('example.com', 443)).toMatchObject({ ok: false, reason: 'dns_failed' });
  });
});

describe('AddressGuard.resolve: the default lookup', () => {
  it('resolves localhost through the system resolver and classifies it as loopback', async () => {
    const got = await new AddressGuard().resolve('localhost', 80);
    expect(got.ok).toBe(true);
    if (got.ok) {
      expect(got.addresses.length).toBeGreaterThan(0);
      for (const a of got.addresses) expect(a.cls.kind).toBe('loopback');
      expect(got.allPublic).toBe(false);
    }
  });
});

async function listen(host: string): Promise<Server> {
  const server = createServer((socket) => socket.destroy());
  server.listen(0, host);
  await once(server, 'listening');
  return server;
}
const portOf = (server: Server): number => (server.address() as AddressInfo).port;

describe('AddressGuard.resolve: the sidecar’s own listeners', () => {
  let loopbackServer: Server;
  let wildcardServer: Server;
  let loopbackPort: number;
  let wildcardPort: number;
  // A dual-stack wildcard listener, described rather than bound: resolve() never connects, and an IPv6
  // socket may be unavailable where the suite runs.
  let dualStackPort: number;
  let otherPort: number;
  let guard: AddressGuard;
  let calls = 0;

  beforeAll(async () => {
    loopbackServer = await listen('127.0.0.1');
    wildcardServer = await listen('0.0.0.0');
    loopbackPort = portOf(loopbackServer);
    wildcardPort = portOf(wildcardServer);
    const used = new Set([loopbackPort, wildcardPort]);
    const free = [1, 2, 3, 4].filter((p) => !used.has(p));
    dualStackPort = free[0]!;
    otherPort = free[1]!;
    const { lookup } = scriptedLookup({
      localhost: [v4('127.0.0.1'), v6('::1')],
      'rebind.example': [v4('8.8.8.8'), v4('127.0.0.1')],
      'public.example': [v4('8.8.8.8')],
    });
    guard = new AddressGuard({
      lookup,
      ownListeners: () => {
        calls++;
        const { address, port } = loopbackServer.address() as AddressInfo;
        const wildcard = wildcardServer.address() as AddressInfo;
        return [
          { address, port },
          { address: wildcard.address, port: wildcard.port },
          { address: '::', port: dualStackPort },
        ];
      },
    });
  });

  afterAll(async () => {
    loopbackServer.close();
    wildcardServer.close();
    await Promise.all([once(loopbackServer, 'close'), once(wildcardServer, 'close')]);
  });

  // A non-loopback address of this machine, if it has one: reachable through a wildcard listener.
  const interfaceAddress =
    Object.values(networkInterfaces())
      .flatMap((infos) => infos ?? [])
      .find((info) => !info.internal && info.family === 'IPv4')?.address ?? '127.0.0.1';

  interface OwnCase {
    note: string;
    host: string;
    port: () => number;
    own: boolean;
  }
  const cases: OwnCase[] = [
    { note: 'loopback listener, same address', host: '127.0.0.1', port: () => loopbackPort, own: true },
    {
      note: 'loopback listener, another loopback address',
      host: '127.0.0.2',
      port: () => loopbackPort,
      own: true,
    },
    { note: 'loopback listener, IPv6 loopback', host: '[::1]', port: () => loopbackPort, own: true },
    {
      note: 'loopback listener, mapped form',
      host: '[::ffff:127.0.0.1]',
      port: () => loopbackPort,
      own: true,
    },
    { note: 'loopback listener, decimal dword', host: '2130706433', port: () => loopbackPort, own: true },
    { note: 'loopback listener, 0.0.0.0 reaches it', host: '0.0.0.0', port: () => loopbackPort, own: true },
    { note: 'loopback listener, :: reaches it', host: '[::]', port: () => loopbackPort, own: true },
    { note: 'loopback listener, via localhost', host: 'localhost', port: () => loopbackPort, own: true },
    {
      note: 'loopback listener, one of several answers',
      host: 'rebind.example',
      port: () => loopbackPort,
      own: true,
    },
    { note: 'loopback listener, unrelated address', host: '192.0.2.1', port: () => loopbackPort, own: false },
    { note: 'loopback listener, public name', host: 'public.example', port: () => loopbackPort, own: false },
    { note: 'wildcard listener, loopback', host: '127.0.0.1', port: () => wildcardPort, own: true },
    { note: 'wildcard listener, IPv6 loopback', host: '[::1]', port: () => wildcardPort, own: true },
    { note: 'wildcard listener, unspecified', host: '0.0.0.0', port: () => wildcardPort, own: true },
    {
      note: 'wildcard listener, an interface address',
      host: interfaceAddress,
      port: () => wildcardPort,
      own: true,
    },
    { note: 'wildcard listener, unrelated address', host: '192.0.2.1', port: () => wildcardPort, own: false },
    { note: 'dual-stack wildcard, IPv4 loopback', host: '127.0.0.1', port: () => dualStackPort, own: true },
    { note: 'dual-stack wildcard, IPv6 loopback', host: '[::1]', port: () => dualStackPort, own: true },
    { note: 'no listener on the port', host: '127.0.0.1', port: () => otherPort, own: false },
  ];

  it.each(cases.map((c) => [c.note, c] as const))('%s', async (_note, c) => {
    const got = await guard.resolve(c.host, c.port());
    if (c.own) expect(got).toMatchObject({ ok: false, reason: 'own_listener' });
    else expect(got.ok).toBe(true);
  });

  it('asks for the listeners on every resolution, so late-bound ports count', async () => {
    const before = calls;
    await guard.resolve('192.0.2.1', otherPort);
    await guard.resolve('192.0.2.1', otherPort);
    expect(calls - before).toBe(2);
  });
});

describe('pinnedLookup', () => {
  let server: Server;
  let port: number;
  let accepted = 0;

  beforeAll(async () => {
    server = createServer((socket) => {
      accepted++;
      socket.end('pinned\n');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    port = portOf(server);
  });
  afterAll(async () => {
    server.close();
    await once(server, 'close');
  });

  it.each([
    ['with address-family selection', true],
    ['without address-family selection', false],
  ] as const)(
    'net.connect to a name that cannot resolve reaches the pinned address, %s',
    async (_note, autoSelectFamily) => {
      const before = accepted;
      const socket = connect({
        host: 'pinned.invalid',
        port,
        autoSelectFamily,
        lookup: pinnedLookup('127.0.0.1', 4),
      });
      let remote: string | undefined;
      socket.on('connect', () => {
        remote = socket.remoteAddress;
      });
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      await once(socket, 'end');
      socket.destroy();
      expect(Buffer.concat(chunks).toString()).toBe('pinned\n');
      expect(remote).toBe('127.0.0.1');
      expect(accepted - before).toBe(1);
    },
  );

  it.each([
    ['single answer', false],
    ['all answers', true],
  ] as const)('answers only the pinned address: %s', (_note, all) => {
    const answers: unknown[] = [];
    pinnedLookup('2606:4700::1111', 6)('anything.example', { all }, (err, address, family) => {
      answers.push(err, address, family);
    });
    expect(answers).toEqual(
      all ? [null, [{ address: '2606:4700::1111', family: 6 }], undefined] : [null, '2606:4700::1111', 6],
    );
  });
});

describe('pinning with undici: IP origin plus the Host header', () => {
  it('the upstream sees the agent’s host name while the connection goes to the pinned address', async () => {
    const seen: Array<{ host: string | undefined; remote: string | undefined }> = [];
    const upstream = createHttpServer((req, res) => {
      seen.push({ host: req.headers.host, remote: req.socket.localAddress });
      res.end('ok');
    });
    upstream.listen(0, '127.0.0.1');
    await once(upstream, 'listening');
    const port = (upstream.address() as AddressInfo).port;
    try {
      const { lookup, asked } = scriptedLookup({ 'api.example.test': [v4('127.0.0.1')] });
      const resolution = await new AddressGuard({ lookup }).resolve('api.example.test', port);
      expect(resolution.ok).toBe(true);
      if (!resolution.ok) return;
      const client = new Client(`http://${resolution.pinned}:${port}`);
      try {
        const res = await client.request({
          path: '/',
          method: 'GET',
          headers: { host: `${resolution.host}:${port}` },
        });
        expect(res.statusCode).toBe(200);
        expect(await res.body.text()).toBe('ok');
      } finally {
        await client.close();
      }
      expect(seen).toEqual([{ host: `api.example.test:${port}`, remote: '127.0.0.1' }]);
      expect(asked).toEqual(['api.example.test']);
    } finally {
      upstream.close();
      await once(upstream, 'close');
    }
  });
});
