// Verification of an audit file against its hash chain and checkpoints, naming the first damage and its kind.
import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { terminalSafe } from '../terminal-safe.ts';
import type { AuditEntry, ChainHead, Checkpoint } from './entry.ts';
import { checkpointPathFor, GENESIS_HASH, hashEntry, parseCheckpoint, parseEntry } from './entry.ts';

export type DamageKind = 'modified' | 'deleted' | 'reordered' | 'truncated' | 'torn';

export type VerifyResult =
  | { readonly ok: true; readonly count: number; readonly head: ChainHead }
  | {
      readonly ok: false;
      /** 1-based line of the first damage. */
      readonly line: number;
      readonly kind: DamageKind;
      readonly message: string;
    };

export type Damage = Extract<VerifyResult, { ok: false }>;

/** A verdict plus what the writer needs to continue the chain or cut a torn tail. */
export interface ScanOutcome {
  readonly result: VerifyResult;
  /** The last verified entry (genesis when none). */
  readonly head: ChainHead;
  /** Byte length of the verified lines, newlines included: everything after it is damage or a torn tail. */
  readonly goodBytes: number;
}

// A line whose verdict depends on what follows it.
type Pending =
  | { readonly type: 'tail'; readonly line: number; readonly bytes: number; readonly terminated: boolean }
  | { readonly type: 'link'; readonly line: number; readonly prevHash: string; readonly hash: string }
  | { readonly type: 'checkpoint'; readonly line: number; readonly checkpoint: Checkpoint }
  | {
      readonly type: 'seq';
      readonly line: number;
      readonly found: number;
      /** `prev` of the out-of-place entry: the hash of the entry it follows in its own chain. */
      readonly foundPrev: string;
      /** Where seq `found` appears again, if it does: the out-of-place line is then an inserted copy. */
      repeatAt?: number;
      /** Where the missing seq `line` appears, if it does. */
      expectedAt?: number;
      /** True once the entry this one links to (seq `found - 1`) turned up later in this file. */
      linked?: boolean;
    };

function damage(line: number, kind: DamageKind, message: string): Damage {
  return { ok: false, line, kind, message };
}

// Messages end up on an operator's terminal (audit verify) and in logs; whatever they quote from the files being
// verified (a checkpoint's ts, an agent name) is escaped, so a forged file cannot rewrite the verdict on screen.

/** A string from a file, quoted and escaped. */
function quote(text: string): string {
  return terminalSafe(JSON.stringify(text));
}

/** When a checkpoint was taken, as the checkpoint says (escaped). */
function when(cp: Checkpoint): string {
  return terminalSafe(cp.ts);
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? 'y' : 'ies'}`;
}

/** The agent an audit file belongs to by its name, `<agent>.audit.jsonl`; undefined for other names. */
export function agentFromFileName(path: string): string | undefined {
  const name = basename(path);
  const agent = name.endsWith('.audit.jsonl') ? name.slice(0, -'.audit.jsonl'.length) : '';
  return agent === '' ? undefined : agent;
}

/**
 * Consumes lines in order and stops caring once the first damage is known. Every entry and checkpoint must belong
 * to one agent: the one given, or else the agent of the first entry.
 */
export class ChainScanner {
  private readonly checkpoints = new Map<number, Checkpoint>();
  private readonly latest: Checkpoint | undefined;
  private readonly allCheckpoints: readonly Checkpoint[];
  private agent: string | undefined;
  /** The checkpoint of another agent with the lowest count, once the agent is known. */
  private foreign: Checkpoint | undefined;
  private lines = 0;
  private count = 0;
  private headHash = GENESIS_HASH;
  private goodBytes = 0;
  private pending: Pending | undefined;
  private verdict: Damage | undefined;

  constructor(checkpoints: readonly Checkpoint[] = [], agent?: string) {
    let latest: Checkpoint | undefined;
    for (const cp of checkpoints) {
      if (cp.count === 0) continue;
      this.checkpoints.set(cp.count, cp);
      if (!latest || cp.count >= latest.count) latest = cp;
    }
    this.latest = latest;
    this.allCheckpoints = checkpoints;
    if (agent !== undefined) this.expectAgent(agent);
  }

  private expectAgent(agent: string): void {
    this.agent = agent;
    for (const cp of this.allCheckpoints) {
      if (cp.agent !== agent && (!this.foreign || cp.count < this.foreign.count)) this.foreign = cp;
    }
  }

  // A checkpoint of another agent is refused where its count points, or at the end when the file is shorter.
  private foreignCheckpoint(cp: Checkpoint, line: number): Damage {
    return damage(
      line,
      'modified',
      `the checkpoint of ${when(cp)} (count ${cp.count}) is agent ${quote(cp.agent)}'s, not ${quote(this.agent ?? '')}'s: the checkpoints file holds another chain's checkpoints`,
    );
  }

  /** True once more lines cannot change the verdict. */
  get settled(): boolean {
    return this.verdict !== undefined;
  }

  /** One line without its newline; `terminated` is false only for bytes after the last newline. */
  push(line: Buffer, terminated: boolean): void {
    const lineNo = ++this.lines;
    if (this.verdict) return;
    if (this.pending) {
      this.resolve(this.pending, line, lineNo);
      return;
    }
    const entry = terminated ? parseEntry(line.toString('utf8')) : undefined;
    if (!entry) {
      this.pending = { type: 'tail', line: lineNo, bytes: line.length, terminated };
      return;
    }
    if (hashEntry(entry) !== entry.hash) {
      this.verdict = damage(
        lineNo,
        'modified',
        `entry seq ${entry.seq} does not match its hash (a field was edited)`,
      );
      return;
    }
    if (lineNo === 1 && this.agent === undefined) this.expectAgent(entry.agent);
    if (entry.agent !== this.agent) {
      this.verdict = damage(
        lineNo,
        'modified',
        `entry seq ${entry.seq} is agent ${quote(entry.agent)}'s, not ${quote(this.agent ?? '')}'s: another agent's entry or chain`,
      );
      return;
    }
    if (entry.seq !== lineNo) {
      if (entry.seq < lineNo) {
        this.verdict = damage(
          lineNo,
          'modified',
          `seq ${entry.seq} repeats an earlier entry (a line was inserted or duplicated)`,
        );
      } else {
        this.pending = { type: 'seq', line: lineNo, found: entry.seq, foundPrev: entry.prev };
      }
      return;
    }
    if (entry.prev !== this.headHash) {
      this.pending = { type: 'link', line: lineNo, prevHash: this.headHash, hash: entry.hash };
      return;
    }
    if (this.foreign && Math.max(this.foreign.count, 1) === lineNo) {
      this.verdict = this.foreignCheckpoint(this.foreign, lineNo);
      return;
    }
    const cp = this.checkpoints.get(lineNo);
    if (cp && cp.head !== entry.hash) {
      this.pending = { type: 'checkpoint', line: lineNo, checkpoint: cp };
      return;
    }
    this.count = lineNo;
    this.headHash = entry.hash;
    this.goodBytes += line.length + 1;
  }

  private resolve(p: Pending, line: Buffer, lineNo: number): void {
    switch (p.type) {
      case 'tail':
        this.verdict = damage(p.line, 'modified', 'line is not a valid audit entry');
        return;
      case 'link':
        this.verdict = this.blameLink(p, parseEntry(line.toString('utf8')));
        return;
      case 'checkpoint': {
        const next = parseEntry(line.toString('utf8'));
        this.verdict =
          next?.prev === p.checkpoint.head
            ? damage(
                p.line,
                'modified',
                `entry seq ${p.line} was edited and its hash recomputed (checkpoint of ${when(p.checkpoint)} recorded another head)`,
              )
            : this.checkpointMismatch(p.line, p.checkpoint);
        return;
      }
      case 'seq': {
        // Judged at the end (see seqDamage); only a repeat of the out-of-place seq settles it early.
        const next = parseEntry(line.toString('utf8'));
        if (!next) return;
        if (next.seq === p.line) p.expectedAt ??= lineNo;
        if (next.seq === p.found - 1 && next.hash === p.foundPrev) p.linked = true;
        if (next.seq === p.found) {
          p.repeatAt = lineNo;
          this.verdict = this.seqDamage(p);
        }
        return;
      }
    }
  }

  // Line `p.line` holds seq `p.found`, ahead of its place. If that seq appears again, or the entry does not link
  // to this file's seq `found - 1` while the missing seq turns up later, the line was inserted: `modified`. If the
  // entry is this chain's own and the missing seq turns up later, the lines were moved: `reordered`. If the
  // missing seq never turns up, entries were removed: `deleted`.
  private seqDamage(p: Extract<Pending, { type: 'seq' }>): Damage {
    if (p.repeatAt !== undefined) {
      return damage(
        p.line,
        'modified',
        `found seq ${p.found} where seq ${p.line} belongs, and seq ${p.found} again at line ${p.repeatAt} (a line was inserted or duplicated)`,
      );
    }
    if (p.expectedAt !== undefined && !p.linked) {
      return damage(
        p.line,
        'modified',
        `found seq ${p.found} where seq ${p.line} belongs, and seq ${p.line} follows at line ${p.expectedAt}; the entry does not link into this chain (a line was inserted)`,
      );
    }
    if (p.expectedAt !== undefined) {
      return damage(
        p.line,
        'reordered',
        `found seq ${p.found} where seq ${p.line} belongs; seq ${p.line} is at line ${p.expectedAt}`,
      );
    }
    return damage(
      p.line,
      'deleted',
      `found seq ${p.found} where seq ${p.line} belongs: ${plural(p.found - p.line, 'entr')} missing`,
    );
  }

  // Entry L does not link to entry L-1: either L-1 was edited and rehashed, or L's prev was rewritten.
  // The entry after L tells them apart: if it still links to L, L is intact.
  private blameLink(p: Extract<Pending, { type: 'link' }>, next: AuditEntry | undefined | 'eof'): Damage {
    const rewrittenPrev = damage(
      p.line,
      'modified',
      `entry seq ${p.line} does not link to the entry before it`,
    );
    const editedBefore = damage(
      p.line - 1,
      'modified',
      `entry seq ${p.line - 1} was edited and its hash recomputed: entry seq ${p.line} does not link to it`,
    );
    if (p.line === 1 || this.checkpoints.get(p.line - 1)?.head === p.prevHash) return rewrittenPrev;
    if (next === 'eof') {
      if (this.checkpoints.get(p.line)?.head === p.hash) return editedBefore;
      return damage(
        p.line - 1,
        'modified',
        `entry seq ${p.line} does not link to entry seq ${p.line - 1}: one of the two was edited and rehashed`,
      );
    }
    return next?.prev === p.hash ? editedBefore : rewrittenPrev;
  }

  private checkpointMismatch(line: number, cp: Checkpoint): Damage {
    return damage(
      line,
      'truncated',
      `entry seq ${line} does not carry the head recorded by the checkpoint of ${when(cp)}: the log up to it was replaced (cut and appended to, or edited and rehashed)`,
    );
  }

  finish(): ScanOutcome {
    let tail: Extract<Pending, { type: 'tail' }> | undefined;
    const p = this.pending;
    if (!this.verdict && p) {
      switch (p.type) {
        case 'tail':
          tail = p;
          break;
        case 'link':
          this.verdict = this.blameLink(p, 'eof');
          break;
        case 'checkpoint':
          this.verdict = this.checkpointMismatch(p.line, p.checkpoint);
          break;
        case 'seq':
          this.verdict = this.seqDamage(p);
          break;
      }
    }
    if (!this.verdict && this.foreign) {
      this.verdict = this.foreignCheckpoint(
        this.foreign,
        Math.min(Math.max(this.foreign.count, 1), this.count + 1),
      );
    }
    const latest = this.latest;
    if (!this.verdict && latest && latest.count > this.count) {
      // A checkpoint is written only after its entries are durable, so even a torn line it covers was cut.
      this.verdict = damage(
        this.count + 1,
        'truncated',
        `the file ends after ${this.count} entries but the checkpoint of ${when(latest)} recorded ${latest.count}`,
      );
    }
    if (!this.verdict && tail) {
      this.verdict = damage(
        tail.line,
        'torn',
        tail.terminated
          ? `last line is not a valid audit entry (${tail.bytes} bytes)`
          : `last line is unterminated (${tail.bytes} bytes), as a crash mid-write leaves it`,
      );
    }
    const head = { count: this.count, hash: this.headHash };
    const result: VerifyResult = this.verdict ?? { ok: true, count: this.count, head };
    return { result, head, goodBytes: this.goodBytes };
  }
}

/** Splits a buffer into lines; the last piece is unterminated unless the buffer ends with a newline. */
function* splitLines(buf: Buffer): Generator<[Buffer, boolean]> {
  let start = 0;
  for (;;) {
    const nl = buf.indexOf(10, start);
    if (nl < 0) break;
    yield [buf.subarray(start, nl), true];
    start = nl + 1;
  }
  if (start < buf.length) yield [buf.subarray(start), false];
}

/** Parses a checkpoints file's text; malformed lines (a torn last one included) are skipped. */
export function parseCheckpoints(text: string): Checkpoint[] {
  const out: Checkpoint[] = [];
  for (const line of text.split('\n')) {
    const cp = line.trim() === '' ? undefined : parseCheckpoint(line);
    if (cp) out.push(cp);
  }
  return out;
}

/** Reads a checkpoints file; a missing file means no checkpoints. */
export async function readCheckpoints(path: string): Promise<Checkpoint[]> {
  try {
    return parseCheckpoints(await readFile(path, 'utf8'));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Verifies audit text held in memory; `agent` defaults to the first entry's. */
export function verifyAuditText(
  text: string,
  checkpoints: readonly Checkpoint[] = [],
  agent?: string,
): VerifyResult {
  const scanner = new ChainScanner(checkpoints, agent);
  for (const [line, terminated] of splitLines(Buffer.from(text, 'utf8'))) {
    scanner.push(line, terminated);
    if (scanner.settled) break;
  }
  return scanner.finish().result;
}

/**
 * Streams an audit file through the scanner, expecting `agent`'s chain (the first entry's agent when undefined).
 * Throws the file system's error when the file cannot be read.
 */
export async function scanAuditFile(
  path: string,
  checkpoints: readonly Checkpoint[],
  agent?: string,
): Promise<ScanOutcome> {
  const scanner = new ChainScanner(checkpoints, agent);
  let carry: Buffer[] = [];
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 16 }) as AsyncIterable<Buffer>) {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      scanner.push(carry.length > 0 ? Buffer.concat([...carry, piece]) : piece, true);
      carry = [];
      start = nl + 1;
    }
    if (start < chunk.length) carry.push(chunk.subarray(start));
    if (scanner.settled) return scanner.finish();
  }
  if (carry.length > 0) scanner.push(Buffer.concat(carry), false);
  return scanner.finish();
}

export interface VerifyOptions {
  /** Defaults to the sibling `<agent>.audit.checkpoints.jsonl`, when it exists. */
  readonly checkpointsPath?: string;
  /**
   * The agent whose chain this is: every entry and checkpoint must name it. Defaults to the agent the file name
   * `<agent>.audit.jsonl` implies, or for other names to the first entry's agent.
   */
  readonly agent?: string;
}

/** Verifies an audit file. Throws the file system's error when the audit or checkpoints file cannot be read. */
export async function verifyAuditFile(path: string, opts: VerifyOptions = {}): Promise<VerifyResult> {
  // A checkpoints file named explicitly must exist; the conventional sibling is optional.
  const checkpoints =
    opts.checkpointsPath !== undefined
      ? parseCheckpoints(await readFile(opts.checkpointsPath, 'utf8'))
      : await readCheckpoints(checkpointPathFor(path));
  return (await scanAuditFile(path, checkpoints, opts.agent ?? agentFromFileName(path))).result;
}
