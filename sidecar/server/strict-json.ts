// Strict JSON for agent input: duplicate keys (a parser-differential trick), absurd nesting and numbers too large
// for a double (1e400 would become Infinity) are refused.
import { isExactDecimal } from '../policy/exact-number.ts';

export type StrictJson =
  | { readonly ok: true; readonly value: unknown }
  | { readonly ok: false; readonly why: string };

const MAX_DEPTH = 64;
// Sticky: matches at lastIndex in place, so a long number is never cut by a window.
const LITERAL = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null/y;

export interface StrictJsonOptions {
  /**
   * Refuse a number literal that is not exactly the decimal its double shows (`9007199254740993` becomes
   * ...992, `100.0000000000000001` becomes 100): where the policy judges values another program reads at full
   * precision, the two would decide on different numbers.
   */
  readonly exactNumbers?: boolean;
}

/** Validates structure and key uniqueness with a scanner, then lets JSON.parse build the value. */
export function parseStrictJson(text: string, opts: StrictJsonOptions = {}): StrictJson {
  let i = 0;
  const n = text.length;
  const ws = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else break;
    }
  };
  const fail = (why: string): never => {
    throw new SyntaxError(why);
  };
  const string = (): string => {
    const start = i;
    i++; // opening quote
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        return JSON.parse(text.slice(start, i)) as string;
      }
      if (c === 0x5c) i += 2;
      else if (c < 0x20) fail('control character in string');
      else i++;
    }
    return fail('unterminated string');
  };
  const value = (depth: number): void => {
    if (depth > MAX_DEPTH) fail('nesting too deep');
    ws();
    const c = text[i];
    if (c === '{') {
      i++;
      const keys = new Set<string>();
      ws();
      if (text[i] === '}') {
        i++;
        return;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail('expected a key');
        const key = string();
        if (keys.has(key)) fail(`duplicate key ${JSON.stringify(key)}`);
        keys.add(key);
        ws();
        if (text[i] !== ':') fail('expected ":"');
        i++;
        value(depth + 1);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === '}') {
          i++;
          return;
        }
        fail('expected "," or "}"');
      }
    }
    if (c === '[') {
      i++;
      ws();
      if (text[i] === ']') {
        i++;
        return;
      }
      for (;;) {
        value(depth + 1);
        ws();
        if (text[i] === ',') {
          i++;
          continue;
        }
        if (text[i] === ']') {
          i++;
          return;
        }
        fail('expected "," or "]"');
      }
    }
    if (c === '"') {
      string();
      return;
    }
    LITERAL.lastIndex = i;
    const m = LITERAL.exec(text);
    if (!m) fail('unexpected token');
    const literal = (m as RegExpExecArray)[0];
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) {
      // 1e400 parses to Infinity, which no hash, signature or forwarded copy can carry: refused like bad syntax.
      if (!Number.isFinite(Number(literal))) fail('number out of range');
      if (opts.exactNumbers && !isExactDecimal(literal)) fail('number not exactly representable');
    }
    i += literal.length;
  };
  try {
    value(0);
    ws();
    if (i !== n) fail('trailing data');
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return { ok: false, why: err instanceof Error ? err.message : 'invalid JSON' };
  }
}
