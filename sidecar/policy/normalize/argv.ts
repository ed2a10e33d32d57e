// A strict POSIX shell-words lexer: turns a command string into argv without running a shell,
// and refuses anything whose argv a shell would not take literally (operators, expansions, redirections).

export type LexResult =
  | { readonly ok: true; readonly argv: readonly string[] }
  | { readonly ok: false; readonly why: string };

// Outside quotes these either end the simple command or make the shell change the words.
const OPERATOR_CHARS = new Set([';', '&', '|', '<', '>', '(', ')']);
const EXPANSION_CHARS = new Set(['*', '?', '[', ']', '{', '}', '~']);
const ASSIGNMENT = /^[A-Za-z_][A-Za-z0-9_]*=/;

export function lexCommand(command: string): LexResult {
  if (command.includes('\0')) return { ok: false, why: 'NUL byte' };
  if (/[\n\r]/.test(command)) return { ok: false, why: 'newline' };
  const argv: string[] = [];
  let word = '';
  let inWord = false;
  // How much of the word came before its first quote or backslash (-1: none): a shell reads `NAME=` as an
  // assignment when that part is unquoted, whatever is quoted after it (`FOO="x" rm` sets FOO and runs rm).
  let unquotedPrefix = -1;
  const quoteStarts = () => {
    if (unquotedPrefix < 0) unquotedPrefix = word.length;
  };
  let i = 0;
  const n = command.length;
  const finish = (): LexResult | undefined => {
    if (!inWord) return undefined;
    const name = argv.length === 0 ? ASSIGNMENT.exec(word) : null;
    if (name && (unquotedPrefix < 0 || name[0].length <= unquotedPrefix)) {
      return { ok: false, why: 'leading variable assignment' };
    }
    argv.push(word);
    word = '';
    inWord = false;
    unquotedPrefix = -1;
    return undefined;
  };
  while (i < n) {
    const c = command[i] as string;
    if (c === ' ' || c === '\t') {
      const err = finish();
      if (err) return err;
      i++;
      continue;
    }
    if (c === "'") {
      const end = command.indexOf("'", i + 1);
      if (end < 0) return { ok: false, why: 'unterminated single quote' };
      quoteStarts();
      word += command.slice(i + 1, end);
      inWord = true;
      i = end + 1;
      continue;
    }
    if (c === '"') {
      quoteStarts();
      i++;
      let closed = false;
      while (i < n) {
        const d = command[i] as string;
        if (d === '"') {
          closed = true;
          i++;
          break;
        }
        if (d === '$' || d === '`') return { ok: false, why: 'expansion inside double quotes' };
        if (d === '\\') {
          const next = command[i + 1];
          if (next === undefined) return { ok: false, why: 'trailing backslash' };
          // Inside double quotes a backslash escapes only these; otherwise it is literal.
          if (next === '"' || next === '\\' || next === '$' || next === '`') {
            word += next;
            i += 2;
            continue;
          }
          word += d;
          i++;
          continue;
        }
        word += d;
        i++;
      }
      if (!closed) return { ok: false, why: 'unterminated double quote' };
      inWord = true;
      continue;
    }
    if (c === '\\') {
      const next = command[i + 1];
      if (next === undefined) return { ok: false, why: 'trailing backslash' };
      quoteStarts();
      word += next;
      inWord = true;
      i += 2;
      continue;
    }
    if (OPERATOR_CHARS.has(c)) return { ok: false, why: `shell operator ${JSON.stringify(c)}` };
    if (c === '$' || c === '`') return { ok: false, why: 'command or variable substitution' };
    if (EXPANSION_CHARS.has(c))
      return { ok: false, why: `unquoted expansion character ${JSON.stringify(c)}` };
    if (c === '#' && !inWord) return { ok: false, why: 'comment' };
    word += c;
    inWord = true;
    i++;
  }
  const err = finish();
  if (err) return err;
  if (argv.length === 0) return { ok: false, why: 'empty command' };
  return { ok: true, argv };
}

export function argvStartsWith(argv: readonly string[], prefix: readonly string[]): boolean {
  if (prefix.length > argv.length) return false;
  for (let i = 0; i < prefix.length; i++) if (argv[i] !== prefix[i]) return false;
  return true;
}

export function argvEquals(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && argvStartsWith(a, b);
}
