// The CLI's one escaper for text it did not write (cli/io.ts): what it escapes, that escaped JSON keeps its meaning,
// and how table cells are cut. Every printer of agent- or file-controlled text (approvals list/show/approve, audit
// query, audit verify) relies on these three functions, so a character they miss reaches every operator's terminal.
import { describe, expect, it } from 'vitest';
import { clip, terminalSafe, terminalSafeJson } from '../../../sidecar/cli/io.ts';
import { HOSTILE_CHARS, unsafeIn } from './terminal-chars.ts';

describe('terminalSafe', () => {
  it.each(HOSTILE_CHARS)('escapes $name as \\uXXXX', ({ char }) => {
    const out = terminalSafe(`a${char}b`);
    expect(unsafeIn(out)).toEqual([]);
    expect(out).toMatch(/^a(\\u[0-9a-f]{4})+b$/);
  });

  it('escapes line feeds too (one value, one line) and leaves ordinary text alone', () => {
    expect(terminalSafe('a\nb')).toBe('a\\u000ab');
    expect(terminalSafe('délai → 5 min, 日本, 🙂')).toBe('délai → 5 min, 日本, 🙂');
  });
});

describe('terminalSafeJson', () => {
  it.each(HOSTILE_CHARS)('escapes $name and still parses to the same value', ({ char }) => {
    const value = { note: `a${char}b`, [`k${char}`]: [char] };
    for (const indent of [undefined, 2]) {
      const out = terminalSafeJson(value, indent);
      expect(unsafeIn(out)).toEqual([]);
      expect(JSON.parse(out)).toEqual(value);
    }
  });

  it('keeps the pretty-printer line feeds and writes what JSON.stringify writes for ordinary values', () => {
    const value = { a: [1, 'x'], b: { c: null } };
    expect(terminalSafeJson(value, 2)).toBe(JSON.stringify(value, null, 2));
    expect(terminalSafeJson(value)).toBe(JSON.stringify(value));
    expect(terminalSafeJson(undefined)).toBe('null');
  });
});

describe('clip', () => {
  it.each([
    { text: 'abc', width: 3, want: 'abc' },
    { text: 'abcd', width: 3, want: 'ab…' },
    { text: '', width: 3, want: '' },
    // Cut between code points, never inside a surrogate pair.
    { text: '🙂🙂🙂🙂', width: 3, want: '🙂🙂…' },
  ])('clip($text, $width) is $want', ({ text, width, want }) => {
    expect(clip(text, width)).toBe(want);
  });
});
