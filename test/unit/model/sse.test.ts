// The SSE splitter: events found whatever the chunking, bytes passed on unchanged, dropped events removed exactly.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MAX_EVENT_BYTES, type SseEvent, SseSplitter } from '../../../sidecar/model/sse.ts';

/** Feeds `input` in the given pieces; returns the events seen and the bytes forwarded. */
function run(pieces: readonly Buffer[], drop: (e: SseEvent) => boolean = () => false) {
  const splitter = new SseSplitter();
  const events: SseEvent[] = [];
  const out: Buffer[] = [];
  for (const piece of pieces) {
    out.push(
      splitter.push(piece, (e) => {
        events.push(e);
        return !drop(e);
      }),
    );
  }
  out.push(
    splitter.end((e) => {
      events.push(e);
      return !drop(e);
    }),
  );
  return { events, text: Buffer.concat(out).toString('utf8') };
}

const whole = (s: string) => [Buffer.from(s)];
const bytewise = (s: string) => [...Buffer.from(s)].map((b) => Buffer.from([b]));

const CASES: ReadonlyArray<{ note: string; input: string; events: SseEvent[] }> = [
  {
    note: 'Anthropic style: event and data lines',
    input: 'event: message_start\ndata: {"a":1}\n\nevent: ping\ndata: {}\n\n',
    events: [
      { event: 'message_start', data: '{"a":1}' },
      { event: 'ping', data: '{}' },
    ],
  },
  {
    note: 'OpenAI style: data only, [DONE]',
    input: 'data: {"x":1}\n\ndata: [DONE]\n\n',
    events: [
      { event: 'message', data: '{"x":1}' },
      { event: 'message', data: '[DONE]' },
    ],
  },
  { note: 'CRLF line endings', input: 'event: a\r\ndata: 1\r\n\r\n', events: [{ event: 'a', data: '1' }] },
  { note: 'CR line endings', input: 'event: a\rdata: 1\r\r', events: [{ event: 'a', data: '1' }] },
  {
    note: 'multi-line data joined with LF',
    input: 'data: a\ndata: b\n\n',
    events: [{ event: 'message', data: 'a\nb' }],
  },
  {
    note: 'comments and id/retry ignored',
    input: ': keep-alive\nid: 7\nretry: 10\ndata: x\n\n',
    events: [{ event: 'message', data: 'x' }],
  },
  { note: 'no space after the colon', input: 'data:x\n\n', events: [{ event: 'message', data: 'x' }] },
  {
    note: 'only one leading space is stripped',
    input: 'data:  x\n\n',
    events: [{ event: 'message', data: ' x' }],
  },
  { note: 'a field without a colon', input: 'data\n\n', events: [{ event: 'message', data: '' }] },
  {
    note: 'an event without data is not dispatched',
    input: 'event: lonely\n\ndata: y\n\n',
    events: [{ event: 'message', data: 'y' }],
  },
  { note: 'UTF-8 BOM at the start', input: '\uFEFFdata: z\n\n', events: [{ event: 'message', data: 'z' }] },
  {
    note: 'multi-byte characters',
    input: 'data: héllo ✓ 😀\n\n',
    events: [{ event: 'message', data: 'héllo ✓ 😀' }],
  },
  {
    note: 'an unterminated last event is not dispatched',
    input: 'data: a\n\ndata: b\n',
    events: [{ event: 'message', data: 'a' }],
  },
];

describe('SseSplitter', () => {
  it.each(CASES)('$note (whole, and one byte at a time)', ({ input, events }) => {
    for (const pieces of [whole(input), bytewise(input)]) {
      const r = run(pieces);
      expect(r.events).toEqual(events);
      expect(r.text).toBe(input);
    }
  });

  it('drops exactly the bytes of a dropped event', () => {
    const input = 'data: keep1\n\ndata: {"usage":1}\n\ndata: [DONE]\n\n';
    for (const pieces of [whole(input), bytewise(input)]) {
      const r = run(pieces, (e) => e.data.includes('usage'));
      expect(r.text).toBe('data: keep1\n\ndata: [DONE]\n\n');
    }
  });

  it('hands out complete events only, holding back a partial one', () => {
    const splitter = new SseSplitter();
    const first = splitter.push(Buffer.from('data: a\n\ndata: par'), () => true).toString();
    expect(first).toBe('data: a\n\n');
    expect(splitter.push(Buffer.from('tial\n\n'), () => true).toString()).toBe('data: partial\n\n');
  });

  it('waits for the byte after a trailing CR before ending the line', () => {
    const r = run([Buffer.from('data: a\r'), Buffer.from('\n\r'), Buffer.from('\n')]);
    expect(r.events).toEqual([{ event: 'message', data: 'a' }]);
    expect(r.text).toBe('data: a\r\n\r\n');
  });

  it('passes an oversized event through unparsed rather than buffering without bound', () => {
    const splitter = new SseSplitter();
    const big = Buffer.alloc(MAX_EVENT_BYTES + 10, 0x61);
    const out = splitter.push(Buffer.concat([Buffer.from('data: '), big]), () => false);
    expect(splitter.broken).toBe(true);
    expect(out.length).toBe(big.length + 6);
    expect(splitter.push(Buffer.from('\n\n'), () => false).toString()).toBe('\n\n');
  });

  it('finds the same events and bytes however the stream is cut (property)', () => {
    const event = fc.record({
      name: fc.option(fc.constantFrom('message_start', 'ping', 'x'), { nil: undefined }),
      data: fc.array(
        fc.string({ unit: 'grapheme' }).filter((s) => !/[\r\n]/.test(s)),
        { minLength: 1, maxLength: 3 },
      ),
      eol: fc.constantFrom('\n', '\r\n', '\r'),
    });
    fc.assert(
      fc.property(fc.array(event, { maxLength: 6 }), fc.array(fc.nat(), { maxLength: 8 }), (evs, cuts) => {
        const input = evs
          .map(
            (e) =>
              `${e.name ? `event: ${e.name}${e.eol}` : ''}${e.data.map((d) => `data: ${d}${e.eol}`).join('')}${e.eol}`,
          )
          .join('');
        const bytes = Buffer.from(input);
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const pieces: Buffer[] = [];
        let last = 0;
        for (const p of [...points, bytes.length]) {
          pieces.push(bytes.subarray(last, p));
          last = p;
        }
        const r = run(pieces);
        expect(r.text).toBe(input);
        expect(r.events).toEqual(run([bytes]).events);
        expect(r.events).toHaveLength(evs.length);
      }),
    );
  });
});
