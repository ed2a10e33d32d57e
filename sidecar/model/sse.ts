// An incremental server-sent-events splitter: bytes in as they arrive, complete events out with the exact bytes that carried them.

/** One dispatched event (WHATWG HTML §9.2.6): `event` defaults to "message", data lines joined with "\n". */
export interface SseEvent {
  readonly event: string;
  readonly data: string;
}

/** Says whether an event's bytes go on to the agent; false drops exactly that event's bytes. */
export type KeepEvent = (event: SseEvent) => boolean;

const LF = 0x0a;
const CR = 0x0d;
const COLON = 0x3a;
const SPACE = 0x20;
const EMPTY = Buffer.alloc(0);
/** An event still incomplete after this many bytes is not parsed any further (see `broken`). */
export const MAX_EVENT_BYTES = 8 * 1024 * 1024;

/**
 * Splits a stream at blank lines. Bytes are handed back only up to the end of the last complete event, so a dropped
 * event never half-reaches the agent; an agent cannot use half an event anyway. Everything not dropped is passed on
 * unchanged, byte for byte. The parse state survives chunk boundaries, including a CR whose LF is still to come.
 */
export class SseSplitter {
  #tail: Buffer = EMPTY;
  /** Offset in #tail where the next unread line starts. */
  #scan = 0;
  #event = '';
  #data: string[] = [];
  #hasData = false;
  #sawCr = false;
  #first = true;
  #broken = false;
  #ending = false;

  /** True once an event outgrew MAX_EVENT_BYTES: from then on bytes pass through unparsed. */
  get broken(): boolean {
    return this.#broken;
  }

  /** Feeds a chunk; returns the bytes to forward now (possibly empty). */
  push(chunk: Buffer, keep: KeepEvent): Buffer {
    if (this.#broken) return chunk;
    if (!this.#sawCr && chunk.includes(CR)) this.#sawCr = true;
    let buf = this.#tail.length === 0 ? chunk : Buffer.concat([this.#tail, chunk]);
    if (this.#first && buf.length >= 3) {
      this.#first = false;
      // A UTF-8 byte order mark is not part of the first field name.
      if (buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) this.#scan = Math.max(this.#scan, 3);
    } else if (this.#first && !this.#ending) {
      this.#tail = buf;
      return EMPTY;
    }

    const out: Buffer[] = [];
    let runStart = 0; // start of the bytes kept but not yet handed out
    let blockStart = 0; // start of the event being read
    let pos = this.#scan;
    for (;;) {
      const eol = this.#lineEnd(buf, pos);
      if (eol === undefined) break;
      const [end, next] = eol;
      if (end === pos) {
        const event = this.#dispatch();
        if (event !== undefined && !keep(event)) {
          if (blockStart > runStart) out.push(buf.subarray(runStart, blockStart));
          runStart = next;
        }
        blockStart = next;
      } else {
        this.#field(buf, pos, end);
      }
      pos = next;
    }
    if (blockStart > runStart) out.push(buf.subarray(runStart, blockStart));
    buf = buf.subarray(blockStart);
    this.#tail = buf;
    this.#scan = pos - blockStart;
    if (buf.length > MAX_EVENT_BYTES) {
      this.#broken = true;
      out.push(buf);
      this.#tail = EMPTY;
    }
    if (out.length === 0) return EMPTY;
    return out.length === 1 ? (out[0] as Buffer) : Buffer.concat(out);
  }

  /**
   * End of stream: a trailing CR now ends its line, and what follows the last complete event is passed on as it is
   * (an unterminated event is never dispatched).
   */
  end(keep: KeepEvent): Buffer {
    this.#ending = true;
    const last = this.#broken ? EMPTY : this.push(EMPTY, keep);
    const rest = this.#tail;
    this.#tail = EMPTY;
    this.#scan = 0;
    return last.length === 0 ? rest : Buffer.concat([last, rest]);
  }

  /** [end of line content, start of next line], or undefined when the line is not complete yet. */
  #lineEnd(buf: Buffer, from: number): [number, number] | undefined {
    const lf = buf.indexOf(LF, from);
    if (!this.#sawCr) return lf < 0 ? undefined : [lf, lf + 1];
    const cr = buf.indexOf(CR, from);
    if (cr < 0 || (lf >= 0 && lf < cr)) return lf < 0 ? undefined : [lf, lf + 1];
    // A CR at the very end may be the first half of CRLF: wait for the next byte, unless there is none.
    if (cr === buf.length - 1) return this.#ending ? [cr, cr + 1] : undefined;
    return buf[cr + 1] === LF ? [cr, cr + 2] : [cr, cr + 1];
  }

  #field(buf: Buffer, start: number, end: number): void {
    if (buf[start] === COLON) return; // comment
    const colon = buf.indexOf(COLON, start);
    const nameEnd = colon < 0 || colon > end ? end : colon;
    const name = buf.toString('latin1', start, nameEnd);
    let valueStart = nameEnd === end ? end : nameEnd + 1;
    if (valueStart < end && buf[valueStart] === SPACE) valueStart++;
    if (name === 'data') {
      this.#data.push(buf.toString('utf8', valueStart, end));
      this.#hasData = true;
    } else if (name === 'event') {
      this.#event = buf.toString('utf8', valueStart, end);
    }
    // `id` and `retry` concern reconnection, which the gateway does not do.
  }

  #dispatch(): SseEvent | undefined {
    const event = this.#hasData
      ? { event: this.#event || 'message', data: this.#data.join('\n') }
      : undefined;
    this.#event = '';
    this.#data = [];
    this.#hasData = false;
    return event;
  }
}
