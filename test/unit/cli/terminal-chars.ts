// The characters an agent can put in its data to take over or mislead an operator's terminal, for table tests.

/** Every control, format and separator character (the ones the CLI must never print raw). */
export const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;

/** The unsafe characters in CLI output, as hex code points, apart from the line feeds between its lines. */
export function unsafeIn(out: string): string[] {
  return [...out.replaceAll('\n', '').matchAll(UNSAFE)].map((m) => m[0].codePointAt(0)!.toString(16));
}

export const HOSTILE_CHARS: readonly { readonly name: string; readonly char: string }[] = [
  { name: 'ESC (C0)', char: '\u001b' },
  { name: 'CR (C0)', char: '\r' },
  { name: 'DEL', char: '\u007f' },
  { name: 'PAD (C1)', char: '\u0080' },
  { name: 'NEL (C1)', char: '\u0085' },
  { name: 'CSI (C1)', char: '\u009b' },
  { name: 'ST (C1)', char: '\u009c' },
  { name: 'OSC (C1)', char: '\u009d' },
  { name: 'soft hyphen', char: '\u00ad' },
  { name: 'Arabic letter mark', char: '\u061c' },
  { name: 'zero-width space', char: '\u200b' },
  { name: 'zero-width joiner', char: '\u200d' },
  { name: 'right-to-left mark', char: '\u200f' },
  { name: 'line separator', char: '\u2028' },
  { name: 'paragraph separator', char: '\u2029' },
  { name: 'right-to-left override', char: '\u202e' },
  { name: 'word joiner', char: '\u2060' },
  { name: 'left-to-right isolate', char: '\u2066' },
  { name: 'pop directional isolate', char: '\u2069' },
  { name: 'byte order mark', char: '\ufeff' },
  { name: 'tag letter A (astral)', char: '\u{e0041}' },
];
