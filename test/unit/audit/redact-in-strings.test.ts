// Secrets embedded in a string reach neither the audit file nor anything else that uses the redactor, wherever in
// the string they sit: `Name: value` header lines on any line (raw HTTP, header dumps), a header passed as one
// quoted argument (`curl -H 'Authorization: …'`), `--password=…`, `--password …` and `NAME=…` tokens anywhere in a
// shell command (also after `export`), and the userinfo of URLs of any scheme (`postgres://user:pass@host`).
// Ordinary text (`max_tokens=5`, `Content-Type: json`, plain URLs) is left as it is, and hostile long strings are
// scrubbed in linear time.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuditChain } from '../../../sidecar/audit/chain.ts';
import { REDACTED, redactString } from '../../../sidecar/audit/redact.ts';
import type { Action } from '../../../sidecar/policy/types.ts';

const SECRET = 'hunter2SECRETvalue';
const R = REDACTED;

const cases: Array<{ name: string; action: Record<string, unknown> }> = [
  {
    name: 'Authorization header on the second line of a raw request',
    action: {
      type: 'tool_call',
      tool: 'http_raw',
      args: { request: `GET / HTTP/1.1\r\nAuthorization: Bearer-less ${SECRET}\r\n\r\n` },
    },
  },
  {
    name: 'X-Api-Key header line after the first line of a text',
    action: { type: 'tool_call', tool: 'note', args: { text: `headers:\nX-Api-Key: ${SECRET}` } },
  },
  {
    name: 'Cookie header line after the first line',
    action: {
      type: 'tool_call',
      tool: 'note',
      args: { text: `Host: example.com\nCookie: session=${SECRET}` },
    },
  },
  {
    name: 'curl -H "Authorization: token …" inside a shell command',
    action: {
      type: 'shell_exec',
      command: `curl -H 'Authorization: token ${SECRET}' https://api.github.com/user`,
    },
  },
  {
    name: '--password=… inside a shell command',
    action: { type: 'shell_exec', command: `mysql -u root --password=${SECRET} -h db` },
  },
  {
    name: 'TOKEN=… assignment inside a shell command',
    action: { type: 'shell_exec', command: `export GITHUB_TOKEN=${SECRET} && ./deploy.sh` },
  },
  {
    name: 'postgres URL userinfo in a shell command',
    action: { type: 'shell_exec', command: `psql postgres://admin:${SECRET}@db.internal/prod` },
  },
  {
    name: 'redis URL userinfo in argv',
    action: { type: 'shell_exec', argv: ['redis-cli', '-u', `redis://default:${SECRET}@cache:6379`] },
  },
];

let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'audit-redact-in-strings-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('audit redaction of secrets inside strings', () => {
  it.each(cases)('keeps out of the audit file: $name', async ({ action }) => {
    const chain = await AuditChain.open({ dir: await mkdtemp(join(root, 'c-')), agent: 'a', sync: 'never' });
    await chain.append({
      decision_id: 'd-1',
      agent: 'a',
      kind: 'evaluate',
      action: action as unknown as Action,
      effect: 'DENY',
      rule: null,
      reason: 'no_rule_matched',
      policy_digest: 'a'.repeat(64),
    });
    await chain.close();
    const line = (await readFile(chain.path, 'utf8')).trim();
    const stored = JSON.stringify((JSON.parse(line) as { action: unknown }).action);
    expect(stored, `audit file holds: ${stored}`).not.toContain(SECRET);
  });
});

describe('redactString', () => {
  it.each([
    [
      'a header line among others',
      'Host: a\r\nAuthorization: x y\r\nAccept: json',
      `Host: a\r\nAuthorization: ${R}\r\nAccept: json`,
    ],
    [
      'quoted header arguments',
      `curl -H 'X-Api-Key: k' --header "Accept: json"`,
      `curl -H 'X-Api-Key: ${R}' --header "Accept: json"`,
    ],
    ['assignments after export', 'export A=1 GITHUB_TOKEN=t B=2', `export A=1 GITHUB_TOKEN=${R} B=2`],
    ['a quoted assignment', `export "API_KEY=a b" && run`, `export "API_KEY=${R}" && run`],
    ['a quoted flag value', `mysql --password='a b' -h db`, `mysql --password=${R} -h db`],
    [
      'a flag and its value as two words',
      'docker login --password p -u me',
      `docker login --password ${R} -u me`,
    ],
    [
      'userinfo of a non-http URL',
      'psql postgresql://u:p@db/x?sslmode=require',
      `psql postgresql://${R}@db/x?sslmode=require`,
    ],
  ])('redacts %s', (_name, input, want) => {
    expect(redactString(input)).toBe(want);
  });

  it.each([
    ['counters', 'max_tokens=5 input_tokens=3'],
    ['non-secret assignments', 'key=value FOO=bar --user=root --limit 5'],
    ['plain URLs', 'https://example.com/path?q=1'],
    ['non-secret header lines', 'Content-Type: json\nAccept: */*'],
    ['non-secret quoted headers', `curl -H 'Accept: json' -H "Content-Type: text/plain"`],
    ['a user name without a password in a non-http URL', 'git clone ssh://git@github.com/o/r.git'],
    ['a flag followed by another flag', 'docker login --password-stdin --username me'],
    ['an empty value', 'TOKEN= ./run'],
  ])('keeps %s', (_name, input) => {
    expect(redactString(input)).toBe(input);
  });

  // Hostile megabyte strings: every rule scans forward without backtracking, so these finish in milliseconds (a
  // quadratic pattern would run into the test runner's timeout). The assertions are on the output, never on time.
  it.each([
    ['a=', 'a='.repeat(500_000)],
    [':', ':'.repeat(1_000_000)],
    [' a=', ' a='.repeat(333_333)],
    ["'a:", "'a:".repeat(333_333)],
    ['letters then :', `${'a'.repeat(1_000_000)}:`],
    ['a. then x://', `${'a.'.repeat(500_000)} x://`],
    ['x://', 'x://'.repeat(250_000)],
    ['-- then =', `${'-'.repeat(1_000_000)}=`],
  ])('leaves 1 MB of %s as it is', (_name, input) => {
    expect(redactString(input)).toBe(input);
  });

  it.each([
    [
      'quoted secret assignments on one line',
      " TOKEN='x'".repeat(100_000),
      ' TOKEN=[REDACTED]'.repeat(100_000),
    ],
    [
      'quoted secret headers on one line',
      ' "Authorization: x"'.repeat(50_000),
      ' "Authorization: [REDACTED]"'.repeat(50_000),
    ],
  ])('scrubs every one of 1 MB of %s', (_name, input, want) => {
    expect(redactString(input)).toBe(want);
  });
});
