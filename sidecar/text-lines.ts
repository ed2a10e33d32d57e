// Lines of a UTF-8 stream, split at line feeds only. node:readline also splits at U+2028 and U+2029, which JSON
// leaves raw inside strings: a JSONL line whose data holds one would come apart into two unparseable halves.
import type { Readable } from 'node:stream';

export async function* textLines(input: Readable): AsyncGenerator<string> {
  input.setEncoding('utf8');
  let carry = '';
  for await (const chunk of input as AsyncIterable<string>) {
    const parts = `${carry}${chunk}`.split('\n');
    carry = parts.pop() ?? '';
    yield* parts;
  }
  if (carry !== '') yield carry;
}
