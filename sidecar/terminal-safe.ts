// The one escaper for text printed to an operator's terminal that the sidecar did not write itself (what agents
// sent, what audit files hold): used by the CLI and by the audit reader's messages alike.

// Characters that must not reach a terminal from text the CLI did not write: C0 and C1 controls (ESC, CSI, OSC, ST,
// CR, BS...), format characters (bidi overrides and isolates, zero-width characters, tag characters) and the line
// and paragraph separators. They could move the cursor, recolour or retitle the terminal, write the clipboard, or
// reorder and hide text, so that what the operator reads is not what the data says.
const UNSAFE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu;
// The same, but keeping the line feed: in JSON.stringify's output every raw line feed is its own indentation
// (it escapes those inside strings).
const UNSAFE_IN_JSON = /[^\P{Cc}\n]|[\p{Cf}\p{Zl}\p{Zp}]/gu;

/** `\uXXXX` for each UTF-16 unit of `c`: valid in a JSON string, and unambiguous on a terminal. */
function escapeUnits(c: string): string {
  let out = '';
  for (let i = 0; i < c.length; i++) out += `\\u${c.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return out;
}

/** Text for a terminal: every control, format and separator character becomes a visible `\uXXXX` escape. */
export function terminalSafe(text: string): string {
  return text.replace(UNSAFE, escapeUnits);
}

/**
 * JSON.stringify for a terminal: the same JSON (it parses to the same value), with the control, format and separator
 * characters JSON leaves raw (U+007F..U+009F, bidi, zero-width, U+2028/9...) written as `\uXXXX` escapes. They can
 * only occur inside strings, where such an escape means the same character.
 */
export function terminalSafeJson(value: unknown, indent?: number): string {
  return (JSON.stringify(value, null, indent) ?? 'null').replace(UNSAFE_IN_JSON, escapeUnits);
}

/**
 * Cuts text to at most `width` characters (code points), ending a cut one with `…`. For table cells: one long
 * value must not push every other column off the screen.
 */
export function clip(text: string, width: number): string {
  const chars = [...text];
  return chars.length <= width ? text : `${chars.slice(0, width - 1).join('')}…`;
}
