// The address guard: turns the host an agent names into canonical form, resolves it once, classifies every address,
// refuses the sidecar's own listeners, and hands back one pinned address so nothing downstream resolves again.
//
// Pinning with undici: dispatch to the pinned IP as the origin (`http://<pinned>:<port>`, IPv6 bracketed) and set
// the `host` header to the name the agent asked for. undici derives the TLS servername (SNI and certificate check)
// from that header; pass `servername` in the dispatch options to be explicit. Nothing then resolves the name.
// For raw sockets (CONNECT tunnels), pass `lookup: pinnedLookup(pinned, pinnedFamily)` to net.connect / tls.connect.
import { promises as dns } from 'node:dns';
import type { LookupFunction } from 'node:net';
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { AddressClass, ParsedIp } from './ip-classify.ts';
import { classifyAddress, isPublic, parseIp, unmapIp } from './ip-classify.ts';
import { positiveOption } from './limits.ts';

export type NormalizedHost =
  | { readonly ok: true; readonly host: string; readonly ip?: string }
  | { readonly ok: false };

export interface LookupAnswer {
  readonly address: string;
  readonly family: number;
}

/** Resolves a name to every address it has, in resolver order. */
export type HostLookup = (host: string) => Promise<ReadonlyArray<LookupAnswer>>;

export interface Listener {
  readonly address: string;
  readonly port: number;
}

export interface AddressGuardOptions {
  /** Default: dns.promises.lookup(host, { all: true, order: 'verbatim' }). */
  readonly lookup?: HostLookup;
  /** The sidecar's own listening sockets, read on every resolution so late-bound ports count. */
  readonly ownListeners?: () => ReadonlyArray<Listener>;
  /** Default 5000. */
  readonly lookupTimeoutMs?: number;
  /**
   * Lookups (distinct names) allowed to run at once. Default 2 (`DEFAULT_MAX_CONCURRENT_LOOKUPS`). A request that
   * needs a new lookup when this many are running waits for a slot, within its own lookup timeout.
   */
  readonly maxConcurrentLookups?: number;
  /**
   * Requests allowed to wait for a lookup slot at once. Default 64 (`DEFAULT_MAX_WAITING_LOOKUPS`); one more is
   * refused at once as a DNS failure.
   */
  readonly maxWaitingLookups?: number;
}

/**
 * getaddrinfo blocks one of libuv's threads (4 by default) until it returns, and it cannot be cancelled. The audit
 * log's fdatasync, file I/O and WebCrypto share those threads, so the guard keeps at most half of them for lookups.
 */
export const DEFAULT_MAX_CONCURRENT_LOOKUPS = 2;
/** Ordinary bursts (an agent fetching a handful of hosts at once) wait for a slot; a flood is refused. */
export const DEFAULT_MAX_WAITING_LOOKUPS = 64;

export interface ResolvedAddress {
  readonly address: string;
  readonly family: 4 | 6;
  readonly cls: AddressClass;
}

export type GuardFailure = 'dns_failed' | 'own_listener' | 'invalid_host';

export type GuardResolution =
  | {
      readonly ok: true;
      /** Canonical host (IPv6 literals bracketed), for the Host header, SNI and the audit line. */
      readonly host: string;
      /** Every address the name resolved to; the policy must accept all of them, not just the pinned one. */
      readonly addresses: ReadonlyArray<ResolvedAddress>;
      /** The address to connect to: the first one a TCP connection can be made to. */
      readonly pinned: string;
      readonly pinnedFamily: 4 | 6;
      readonly allPublic: boolean;
    }
  | { readonly ok: false; readonly reason: GuardFailure; readonly detail: string };

const NOT_A_HOST: NormalizedHost = Object.freeze({ ok: false });

// Userinfo, path, query and fragment delimiters would make the URL parser silently drop what follows them;
// C0 controls and spaces it would silently strip. Either way the agent named something other than a host.
const NOT_IN_A_HOST = /[\u0000-\u0020\u007f@/\\?#]/;
const DNS_LABEL = /^[a-z0-9_-]{1,63}$/;

/**
 * Parses a host the way a browser does (WHATWG URL host parser): every IPv4 spelling (`2130706433`, `0x7f.1`,
 * `0177.0.0.1`, `127.1`, percent-encoded digits) becomes dotted decimal, IPv6 is compressed and bracketed, names go
 * through IDNA and are lower-cased, and one trailing dot is dropped. Ports, userinfo and zone ids are refused.
 */
export function normalizeHost(raw: string): NormalizedHost {
  if (typeof raw !== 'string' || raw.length === 0 || NOT_IN_A_HOST.test(raw)) return NOT_A_HOST;
  let input = raw;
  if (raw.startsWith('[')) {
    if (!raw.endsWith(']')) return NOT_A_HOST;
  } else if (raw.includes(':')) {
    if (isIP(raw) !== 6) return NOT_A_HOST;
    input = `[${raw}]`;
  }
  let url: URL;
  try {
    url = new URL(`http://${input}/`);
  } catch {
    return NOT_A_HOST;
  }
  if (url.username || url.password || url.port || url.pathname !== '/' || url.search || url.hash) {
    return NOT_A_HOST;
  }
  let host = url.hostname;
  if (host.startsWith('[')) {
    const ip = host.slice(1, -1);
    return isIP(ip) === 6 ? { ok: true, host, ip } : NOT_A_HOST;
  }
  if (host.endsWith('.')) host = host.slice(0, -1);
  if (isIP(host) === 4) return { ok: true, host, ip: host };
  // A name DNS cannot carry is not one to look up, and keeping to LDH (plus `_`) keeps policy matching unambiguous.
  if (host.length === 0 || host.length > 253 || !host.split('.').every((label) => DNS_LABEL.test(label))) {
    return NOT_A_HOST;
  }
  return { ok: true, host };
}

/**
 * A `lookup` for net.connect / tls.connect that always answers the pinned address, so the socket layer can never
 * perform a second resolution (the DNS-rebinding window smokescreen closes the same way).
 */
export function pinnedLookup(address: string, family: 4 | 6): LookupFunction {
  return (_hostname, options, callback) => {
    if (options.all) callback(null, [{ address, family }]);
    else callback(null, address, family);
  };
}

const defaultLookup: HostLookup = (host) => dns.lookup(host, { all: true, order: 'verbatim' });

/** A lookup that did not answer in time, or one not started because too many were running: its message is the detail. */
class LookupRefused extends Error {}

export class AddressGuard {
  readonly #lookup: HostLookup;
  readonly #ownListeners: () => ReadonlyArray<Listener>;
  readonly #lookupTimeoutMs: number;
  readonly #maxConcurrentLookups: number;
  readonly #maxWaitingLookups: number;
  /** Requests waiting for a lookup slot, oldest first: each starts (or joins) its name's lookup when it gets one. */
  readonly #waiting: Array<() => void> = [];
  /**
   * Lookups in flight, by name, until the lookup itself settles (not until a request stops waiting for it): requests
   * that arrive meanwhile share the answer instead of asking again, and its size is the number of threads held.
   */
  readonly #pending = new Map<string, Promise<ReadonlyArray<LookupAnswer>>>();

  constructor(opts: AddressGuardOptions = {}) {
    this.#lookup = opts.lookup ?? defaultLookup;
    this.#ownListeners = opts.ownListeners ?? (() => []);
    this.#lookupTimeoutMs = opts.lookupTimeoutMs ?? 5000;
    this.#maxConcurrentLookups = positiveOption(
      'maxConcurrentLookups',
      opts.maxConcurrentLookups ?? DEFAULT_MAX_CONCURRENT_LOOKUPS,
    );
    this.#maxWaitingLookups = positiveOption(
      'maxWaitingLookups',
      opts.maxWaitingLookups ?? DEFAULT_MAX_WAITING_LOOKUPS,
    );
  }

  /**
   * Resolves `host` once and classifies every address. Whether a non-public address may be reached is the policy's
   * call (it sees `addresses` and `allPublic`); the guard itself refuses only the sidecar's own listeners.
   */
  async resolve(host: string, port: number): Promise<GuardResolution> {
    const normalized = normalizeHost(host);
    if (!normalized.ok) return { ok: false, reason: 'invalid_host', detail: 'the host does not parse' };
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      return { ok: false, reason: 'invalid_host', detail: `port ${port} is out of range` };
    }

    let answers: ReadonlyArray<LookupAnswer>;
    if (normalized.ip !== undefined) {
      answers = [{ address: normalized.ip, family: isIP(normalized.ip) }];
    } else {
      try {
        answers = await this.#sharedLookup(normalized.host);
      } catch (err) {
        return { ok: false, reason: 'dns_failed', detail: `${normalized.host}: ${describe(err)}` };
      }
      if (!Array.isArray(answers) || answers.length === 0) {
        return { ok: false, reason: 'dns_failed', detail: `${normalized.host}: no addresses` };
      }
    }

    const addresses = answers.map(classifyAnswer);
    const own = addresses.find((a) => this.#isOwnListener(a.address, port));
    if (own) {
      return {
        ok: false,
        reason: 'own_listener',
        detail: `${own.address} port ${port} is a sidecar listener`,
      };
    }
    const pinned = addresses.find((a) => isConnectable(a.cls));
    if (!pinned) {
      // A literal naming an address TCP cannot reach (0.0.0.0 even lands on loopback) is a bad host, not bad DNS.
      const reason = normalized.ip === undefined ? 'dns_failed' : 'invalid_host';
      return { ok: false, reason, detail: `${normalized.host}: no address a connection can be made to` };
    }
    return {
      ok: true,
      host: normalized.host,
      addresses,
      pinned: pinned.address,
      pinnedFamily: pinned.family,
      allPublic: addresses.every((a) => isPublic(a.cls)),
    };
  }

  /**
   * One lookup per name at a time, and at most `maxConcurrentLookups` names at a time. Joining a lookup already in
   * flight is not caching: the answer is at most one lookup old, every request still classifies and checks it for
   * itself, and it is forgotten once it lands. Each request waits with its own timeout; a lookup a request gave up
   * on stays in flight (getaddrinfo cannot be cancelled, its thread stays busy) until it really settles, so it
   * still counts against the limit and a later request for that name joins it rather than starting another. With
   * the limit reached, a request that needs a new lookup waits for a slot within that same timeout, and one that
   * finds `maxWaitingLookups` already waiting is refused at once: nothing grows past the two bounds.
   */
  #sharedLookup(host: string): Promise<ReadonlyArray<LookupAnswer>> {
    const pending = this.#pending.get(host);
    if (pending) return this.#withTimeout(pending);
    if (this.#pending.size < this.#maxConcurrentLookups) return this.#withTimeout(this.#start(host));
    if (this.#waiting.length >= this.#maxWaitingLookups) {
      return Promise.reject(
        new LookupRefused(
          `not looked up: ${this.#pending.size} lookups in flight and ${this.#waiting.length} waiting`,
        ),
      );
    }
    let turn!: () => void;
    const slot = new Promise<ReadonlyArray<LookupAnswer>>((resolve, reject) => {
      turn = () => (this.#pending.get(host) ?? this.#start(host)).then(resolve, reject);
    });
    this.#waiting.push(turn);
    return this.#withTimeout(slot).finally(() => {
      const at = this.#waiting.indexOf(turn);
      if (at >= 0) this.#waiting.splice(at, 1);
    });
  }

  #start(host: string): Promise<ReadonlyArray<LookupAnswer>> {
    const started = Promise.resolve().then(() => this.#lookup(host));
    this.#pending.set(host, started);
    const settled = () => {
      if (this.#pending.get(host) === started) this.#pending.delete(host);
      // A slot is free: the longest waiter takes it.
      while (this.#waiting.length > 0 && this.#pending.size < this.#maxConcurrentLookups)
        this.#waiting.shift()?.();
    };
    started.then(settled, settled);
    return started;
  }

  async #withTimeout(lookup: Promise<ReadonlyArray<LookupAnswer>>): Promise<ReadonlyArray<LookupAnswer>> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new LookupRefused(`lookup timed out after ${this.#lookupTimeoutMs}ms`)),
        this.#lookupTimeoutMs,
      );
    });
    try {
      // A late answer is ignored by this request; the lookup itself stays pending until it settles.
      return await Promise.race([lookup, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  #isOwnListener(address: string, port: number): boolean {
    const listeners = this.#ownListeners().filter((l) => l.port === port);
    if (listeners.length === 0) return false;
    const parsed = parseIp(address);
    if (!parsed) return false;
    const target = unmapIp(parsed);
    const targetKind = hostKind(target);
    for (const listener of listeners) {
      const parsedListener = parseIp(listener.address);
      if (!parsedListener) continue;
      const bound = unmapIp(parsedListener);
      if (sameIp(bound, target)) return true;
      const boundKind = hostKind(bound);
      // Connecting to 0.0.0.0 or :: reaches the loopback interface.
      if (boundKind === 'loopback' && targetKind !== 'other') return true;
      if (boundKind === 'unspecified' && (targetKind !== 'other' || isLocalInterfaceAddress(target)))
        return true;
    }
    return false;
  }
}

function isConnectable(cls: AddressClass): boolean {
  return (
    cls.kind !== 'invalid' &&
    cls.kind !== 'unspecified' &&
    cls.kind !== 'multicast' &&
    cls.kind !== 'broadcast'
  );
}

function classifyAnswer(answer: LookupAnswer): ResolvedAddress {
  const family = isIP(answer.address);
  return {
    address: answer.address,
    family: family === 4 || family === 6 ? family : answer.family === 4 ? 4 : 6,
    cls: classifyAddress(answer.address),
  };
}

/** Loopback or unspecified in the sense the socket layer uses: the host itself. Embeddings other than mapped do not count. */
function hostKind(ip: ParsedIp): 'loopback' | 'unspecified' | 'other' {
  const b = ip.bytes;
  if (ip.family === 4) {
    if (b[0] === 127) return 'loopback';
    return b.every((x) => x === 0) ? 'unspecified' : 'other';
  }
  if (b.every((x, i) => i === 15 || x === 0)) {
    if (b[15] === 0) return 'unspecified';
    if (b[15] === 1) return 'loopback';
  }
  return 'other';
}

function sameIp(a: ParsedIp, b: ParsedIp): boolean {
  return a.family === b.family && a.bytes.every((x, i) => x === b.bytes[i]);
}

function isLocalInterfaceAddress(target: ParsedIp): boolean {
  for (const infos of Object.values(networkInterfaces())) {
    for (const info of infos ?? []) {
      const local = parseIp(info.address);
      if (local && sameIp(unmapIp(local), target)) return true;
    }
  }
  return false;
}

function describe(err: unknown): string {
  if (err instanceof LookupRefused) return err.message;
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return typeof code === 'string' ? code : err.message;
  }
  return String(err);
}
