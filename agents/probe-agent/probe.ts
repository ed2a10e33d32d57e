// The probe agent: one network or privilege check per run, printed as one JSON line; exit 0 when it got through.
// The isolation suite execs it inside the agent container, and the sidecar's lockdown check runs it under each UID.
import { spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { lookup, Resolver } from 'node:dns/promises';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, createServer, isIP, type Server } from 'node:net';
import { networkInterfaces } from 'node:os';

const TIMEOUT_MS = Number(process.env['PROBE_TIMEOUT_MS'] ?? '3000');

interface Result {
  readonly ok: boolean;
  readonly check: string;
  readonly [key: string]: unknown;
}

const failure = (check: string, err: unknown, extra: Record<string, unknown> = {}): Result => ({
  ok: false,
  check,
  ...extra,
  error: (err as NodeJS.ErrnoException).code ?? (err as Error).message,
});

function withTimeout<T>(what: string, work: (done: AbortSignal) => Promise<T>): Promise<T> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), TIMEOUT_MS);
  return Promise.race([
    work(ac.signal),
    new Promise<never>((_, reject) =>
      ac.signal.addEventListener('abort', () =>
        reject(Object.assign(new Error(what), { code: 'ETIMEDOUT' })),
      ),
    ),
  ]).finally(() => clearTimeout(timer));
}

async function tcp(host: string, port: number): Promise<Result> {
  const started = performance.now();
  try {
    await withTimeout('tcp', async (signal) => {
      await new Promise<void>((resolve, reject) => {
        const socket = connect({ host, port, signal });
        socket.once('connect', () => {
          socket.destroy();
          resolve();
        });
        socket.once('error', reject);
      });
    });
    return { ok: true, check: 'tcp', host, port, ms: Math.round(performance.now() - started) };
  } catch (err) {
    return failure('tcp', err, { host, port, ms: Math.round(performance.now() - started) });
  }
}

/** Sends one datagram and waits for any answer (the status service echoes UDP on its HTTP port). */
async function udp(host: string, port: number): Promise<Result> {
  const socket = createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
  try {
    const reply = await withTimeout(
      'udp',
      () =>
        new Promise<Buffer>((resolve, reject) => {
          socket.once('message', resolve);
          socket.once('error', reject);
          socket.send('probe', port, host, (err) => {
            if (err) reject(err);
          });
        }),
    );
    return { ok: true, check: 'udp', host, port, reply: reply.toString('utf8').slice(0, 64) };
  } catch (err) {
    return failure('udp', err, { host, port });
  } finally {
    socket.close();
  }
}

/** A lookup through the container's resolver (getaddrinfo, /etc/resolv.conf), or straight at one DNS server. */
async function dns(name: string, server?: string): Promise<Result> {
  try {
    const addresses = await withTimeout('dns', async () => {
      if (server === undefined) return (await lookup(name, { all: true })).map((a) => a.address);
      const resolver = new Resolver({ timeout: 1000, tries: 1 });
      resolver.setServers([server]);
      return resolver.resolve4(name);
    });
    return { ok: true, check: 'dns', name, server: server ?? 'system', addresses };
  } catch (err) {
    return failure('dns', err, { name, server: server ?? 'system' });
  }
}

interface HttpTarget {
  readonly host: string;
  readonly port: number;
  readonly path: string;
  readonly headers: Record<string, string>;
}

async function httpGet(check: string, target: HttpTarget, method = 'GET', body?: string): Promise<Result> {
  try {
    const res = await withTimeout(
      check,
      (signal) =>
        new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
          const req = request(
            {
              host: target.host,
              port: target.port,
              path: target.path,
              method,
              headers: target.headers,
              signal,
            },
            (r) => {
              const chunks: Buffer[] = [];
              r.on('data', (c: Buffer) => chunks.push(c));
              r.on('end', () =>
                resolve({
                  status: r.statusCode ?? 0,
                  headers: r.headers,
                  body: Buffer.concat(chunks)
                    .toString('utf8')
                    .slice(0, 256 * 1024),
                }),
              );
              r.on('error', reject);
            },
          );
          req.on('error', reject);
          req.end(body);
        }),
    );
    return {
      ok: true,
      check,
      status: res.status,
      decisionId: res.headers['x-sidecar-decision-id'] ?? null,
      body: res.body,
    };
  } catch (err) {
    return failure(check, err);
  }
}

function direct(url: string): Promise<Result> {
  const u = new URL(url);
  return httpGet('http', {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: Number(u.port || 80),
    path: u.pathname + u.search,
    headers: {},
  });
}

/** Absolute-form request to the forward proxy named by HTTP_PROXY (the sidecar), as an HTTP client would send it. */
function viaProxy(url: string): Promise<Result> {
  const proxy = new URL(process.env['HTTP_PROXY'] ?? process.env['http_proxy'] ?? 'http://127.0.0.1:15000');
  return httpGet('proxy', {
    host: proxy.hostname,
    port: Number(proxy.port || 80),
    path: url,
    headers: { host: new URL(url).host },
  });
}

/** POSTs a JSON body to a path on the sidecar (/v1/evaluate, /mcp, /anthropic/v1/messages), with extra headers. */
function post(check: string, path: string, body: string, headers: readonly string[] = []): Promise<Result> {
  const base = new URL(process.env['SIDECAR_URL'] ?? 'http://127.0.0.1:15000');
  const extra: Record<string, string> = {};
  for (const h of headers) {
    const at = h.indexOf(':');
    if (at > 0) extra[h.slice(0, at).trim().toLowerCase()] = h.slice(at + 1).trim();
  }
  return httpGet(
    check,
    {
      host: base.hostname,
      port: Number(base.port || 80),
      path,
      headers: { 'content-type': 'application/json', ...extra },
    },
    'POST',
    body,
  );
}

function read(path: string): Result {
  try {
    return { ok: true, check: 'read', path, bytes: readFileSync(path).length };
  } catch (err) {
    return failure('read', err, { path });
  }
}

/** Every process this PID namespace shows, by command line. */
function processes(): Result {
  const list: Array<{ pid: number; cmdline: string }> = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ').trim();
      list.push({ pid: Number(entry), cmdline });
    } catch {
      // The process exited while we listed.
    }
  }
  return { ok: true, check: 'procs', processes: list };
}

function interfaces(): Result {
  const all = networkInterfaces();
  const names = Object.keys(all).sort();
  const addresses = names.flatMap((n) => (all[n] ?? []).map((a) => `${n} ${a.address}`));
  return { ok: true, check: 'ifaces', names, addresses };
}

const STATUS_FIELDS = [
  'Uid',
  'Gid',
  'Groups',
  'CapInh',
  'CapPrm',
  'CapEff',
  'CapBnd',
  'CapAmb',
  'NoNewPrivs',
  'Seccomp',
];

function whoami(pid = 'self'): Result {
  try {
    const fields: Record<string, string> = {};
    for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
      const [key, value] = line.split(':\t');
      if (key !== undefined && value !== undefined && STATUS_FIELDS.includes(key)) fields[key] = value.trim();
    }
    return { ok: true, check: 'whoami', pid, ...fields };
  } catch (err) {
    return failure('whoami', err, { pid });
  }
}

function setuid(uid: number): Result {
  // POSIX-only methods: absent on Windows, where this probe never runs.
  const { setgid, setuid: become, getuid } = process;
  if (!setgid || !become || !getuid) return { ok: false, check: 'setuid', uid, error: 'unsupported' };
  try {
    setgid(uid);
    become(uid);
    return { ok: true, check: 'setuid', uid, now: getuid() };
  } catch (err) {
    return failure('setuid', err, { uid });
  }
}

// Node cannot open raw or packet sockets; perl-base (Essential in Debian, so in every bookworm image) calls socket(2)
// with numeric arguments and needs no module. ping: an ICMP datagram socket (allowed by ping_group_range) and a send.
const SOCKET_ATTEMPTS: Record<string, string> = {
  raw: 'socket(my $s, 2, 3, 1) or die "$!\\n"; print "open\\n"',
  packet: 'socket(my $s, 17, 3, 768) or die "$!\\n"; print "open\\n"',
  ping:
    'socket(my $s, 2, 2, 1) or die "$!\\n"; my $a = pack("S n a4 x8", 2, 0, pack("C4", split /\\./, $ARGV[0]));' +
    ' send($s, pack("C C n n n", 8, 0, 0, 0, 1), 0, $a) or die "$!\\n"; print "sent\\n"',
};

function socketAttempt(kind: string, arg: string | undefined): Result {
  const script = SOCKET_ATTEMPTS[kind];
  if (script === undefined) return { ok: false, check: 'socket', error: `unknown socket kind ${kind}` };
  const r = spawnSync('perl', ['-e', script, ...(arg === undefined ? [] : [arg])], {
    encoding: 'utf8',
    timeout: TIMEOUT_MS,
  });
  if (r.error) return failure('socket', r.error, { kind });
  return {
    ok: r.status === 0,
    check: 'socket',
    kind,
    ...(r.status === 0 ? { result: r.stdout.trim() } : { error: r.stderr.trim() }),
  };
}

/** Accepts (and closes) connections on each given port of one address for a while: the lockdown self-check's target. */
async function listen(host: string, ports: number[], seconds: number): Promise<Result> {
  const servers: Server[] = [];
  for (const port of ports) {
    const server = createServer((s) => s.destroy());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, resolve);
    });
    servers.push(server);
  }
  process.stdout.write(`${JSON.stringify({ ok: true, check: 'listen', host, ports })}\n`);
  await new Promise((r) => setTimeout(r, seconds * 1000));
  for (const s of servers) s.close();
  return { ok: true, check: 'listen-done', host, ports };
}

/** Runs the commands on stdin in order, printing each result as it comes: the lockdown self-check's many checks. */
async function batch(): Promise<Result> {
  let input = '';
  for await (const chunk of process.stdin) input += String(chunk);
  let count = 0;
  for (const line of input.split('\n')) {
    const args = line
      .trim()
      .split(/\s+/)
      .filter((a) => a !== '');
    if (args.length === 0 || args[0] === 'batch' || args[0] === 'idle') continue;
    const r = await main(args).catch((err: unknown) => failure('internal', err));
    process.stdout.write(`${JSON.stringify(r)}\n`);
    count++;
  }
  return { ok: true, check: 'batch', count };
}

/** Runs every check in ARGS (a JSON array of argument arrays) at once, in this one process: one extra Node process
 * in a container, not one per check, and the slowest check's time, not their sum. */
async function all(json: string): Promise<Result> {
  let checks: unknown;
  try {
    checks = JSON.parse(json);
  } catch (err) {
    return failure('all', err);
  }
  if (
    !Array.isArray(checks) ||
    !checks.every((c) => Array.isArray(c) && c.every((a) => typeof a === 'string'))
  ) {
    return { ok: false, check: 'all', error: 'expected a JSON array of argument arrays' };
  }
  const nested = (checks as string[][]).filter((c) => ['all', 'batch', 'idle', 'hog'].includes(c[0] ?? ''));
  if (nested.length > 0) return { ok: false, check: 'all', error: `cannot nest ${nested[0]![0]}` };
  const results = await Promise.all(
    (checks as string[][]).map((c) => main(c).catch((err: unknown) => failure('internal', err))),
  );
  return { ok: results.every((r) => r.ok), check: 'all', results };
}

/** Holds MB of touched memory for SECONDS: memory pressure inside a container, to show who the OOM killer picks. */
/** A DNS query for example.com, type A: what a resolver would send. */
function dnsQuery(): Buffer {
  const header = Buffer.from([0x13, 0x37, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
  const name = Buffer.from([7, ...Buffer.from('example'), 3, ...Buffer.from('com'), 0]);
  return Buffer.concat([header, name, Buffer.from([0x00, 0x01, 0x00, 0x01])]);
}

/** Sends one query to host:port from local `port`: 'sent', 'refused' (the firewall: EPERM) or 'busy' (in use). */
function sendFrom(
  port: number,
  host: string,
  dest: number,
  query: Buffer,
): Promise<'sent' | 'refused' | 'busy'> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    const done = (r: 'sent' | 'refused' | 'busy') => {
      socket.close();
      resolve(r);
    };
    socket.once('error', (err: NodeJS.ErrnoException) =>
      done(err.code === 'EADDRINUSE' ? 'busy' : 'refused'),
    );
    socket.bind(port, () => socket.send(query, dest, host, (err) => done(err ? 'refused' : 'sent')));
  });
}

/**
 * Makes the sidecar resolve a name (a proxied request to `url`), then sends a DNS query to host:port from every
 * local ephemeral port: one of them is the source port the sidecar's lookup just used, whose connection-tracking
 * entry the kernel still holds. Got through when any send is not refused by the firewall.
 */
async function borrow(url: string, host: string, port: number): Promise<Result> {
  const trigger = await viaProxy(url);
  const [low, high] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')
    .trim()
    .split(/\s+/)
    .map(Number);
  const query = dnsQuery();
  const sent: number[] = [];
  let refused = 0;
  let busy = 0;
  const BATCH = 256;
  for (let start = low as number; start <= (high as number); start += BATCH) {
    const ports = Array.from({ length: Math.min(BATCH, (high as number) - start + 1) }, (_, i) => start + i);
    const results = await Promise.all(ports.map((p) => sendFrom(p, host, port, query)));
    results.forEach((r, i) => {
      if (r === 'sent') sent.push(ports[i] as number);
      else if (r === 'refused') refused++;
      else busy++;
    });
  }
  return {
    ok: sent.length > 0,
    check: 'borrow',
    host,
    port,
    trigger: trigger.ok ? (trigger['status'] ?? 'ok') : trigger['error'],
    tried: sent.length + refused + busy,
    refused,
    busy,
    sent: sent.slice(0, 10),
  };
}

async function hog(mb: number, seconds: number): Promise<Result> {
  if (!(mb > 0 && mb <= 4096 && seconds > 0 && seconds <= 600)) {
    return { ok: false, check: 'hog', error: 'usage: hog MB SECONDS (MB 1..4096, SECONDS 1..600)' };
  }
  const held = Buffer.allocUnsafe(mb * 1024 * 1024).fill(1);
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  return { ok: true, check: 'hog', mb: held.length / (1024 * 1024), seconds };
}

/** The container's main process: report the identity it runs with, then wait to be exec'd into. */
async function idle(): Promise<Result> {
  process.stdout.write(`${JSON.stringify(whoami())}\n`);
  await new Promise<void>((resolve) => {
    const keepAlive = setInterval(() => {}, 1 << 30);
    const stop = () => {
      clearInterval(keepAlive);
      resolve();
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  return { ok: true, check: 'idle' };
}

const USAGE = `usage: probe <command> [args]
  tcp HOST PORT        connect
  udp HOST PORT        send a datagram, wait for an answer
  dns NAME [SERVER]    look a name up (the container's resolver, or one DNS server)
  http URL             GET, directly
  proxy URL            GET through HTTP_PROXY (the sidecar)
  evaluate JSON        POST an action to the sidecar's /v1/evaluate
  post PATH JSON [NAME:VALUE...]  POST JSON to a path on the sidecar (/mcp, /anthropic/v1/messages, ...)
  read PATH            read a file
  procs                list the processes this PID namespace shows
  ifaces               list network interfaces
  whoami [PID]         uid, groups, capabilities, no_new_privs, seccomp
  setuid UID           try to become UID
  socket raw|packet|ping [IPV4]   try a raw socket, a packet socket, an ICMP echo
  listen HOST PORTS SECONDS       accept on comma-separated PORTS for a while
  batch                one command per stdin line, one JSON line each (one process for many checks)
  all JSON             every check in a JSON array of argument arrays at once; one line with all the results
  borrow URL HOST PORT have the sidecar resolve (a proxied GET of URL), then send a DNS query to HOST:PORT from every
                       local ephemeral port, one of which the sidecar's lookup just used (its conntrack entry)
  hog MB SECONDS       hold MB of touched memory for SECONDS (memory pressure in a container)
  idle                 print who it is and wait for SIGTERM (the container's main process)`;

async function main(argv: readonly string[]): Promise<Result> {
  const [cmd, a, b, c] = argv;
  switch (cmd) {
    case 'tcp':
      return tcp(a ?? '', Number(b));
    case 'udp':
      return udp(a ?? '', Number(b));
    case 'dns':
      return dns(a ?? '', b);
    case 'http':
      return direct(a ?? '');
    case 'proxy':
      return viaProxy(a ?? '');
    case 'evaluate':
      return post('evaluate', '/v1/evaluate', a ?? '');
    case 'post':
      return post('post', a ?? '/', b ?? '', argv.slice(3));
    case 'read':
      return read(a ?? '');
    case 'procs':
      return processes();
    case 'ifaces':
      return interfaces();
    case 'whoami':
      return whoami(a);
    case 'setuid':
      return setuid(Number(a));
    case 'socket':
      return socketAttempt(a ?? '', b);
    case 'batch':
      return batch();
    case 'all':
      return all(a ?? '');
    case 'borrow':
      return borrow(a ?? '', b ?? '127.0.0.11', Number(c ?? '53'));
    case 'hog':
      return hog(Number(a), Number(b));
    case 'idle':
      return idle();
    case 'listen':
      return listen(a ?? '127.0.0.1', (b ?? '').split(',').map(Number), Number(c ?? '5'));
    default:
      return { ok: false, check: 'usage', error: USAGE };
  }
}

// A check exec'd into a container is expendable, the container's own process is not: when the container runs short
// of memory, the kernel's OOM killer takes this process first (raising one's own score needs no privilege).
if (process.argv[2] !== 'idle') {
  try {
    writeFileSync('/proc/self/oom_score_adj', '1000');
  } catch {
    // Not Linux, or no /proc: there is no OOM score to raise.
  }
}

const result = await main(process.argv.slice(2)).catch((err: unknown) => failure('internal', err));
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exitCode = result.ok ? 0 : 1;
