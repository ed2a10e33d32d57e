// Secrets embedded in a string reach neither the audit file nor anything else that uses the redactor, wherever in
// the string they sit: `Name: value` header lines on any line (raw HTTP, header dumps), a header passed as one
// quoted argument (`curl -H 'Authorization: …'`), `--password=…`, `--password …` and `NAME=…` tokens anywhere in a
// shell command (also after `export`), the userinfo of URLs of any scheme (`postgres://user:pass@host`), JSON and
// dict literals inside a string (`{"api_key": "…"}`), folded header continuation lines, unquoted curl header
// arguments (`-H X-Api-Key:…`) and curl user credentials (`-u alice:…`). Ordinary text (`max_tokens=5`,
// `Content-Type: json`, plain URLs) is left as it is, and hostile long strings are scrubbed in linear time.
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
  {
    name: 'JSON body of a tool argument',
    action: { type: 'tool_call', tool: 'http', args: { body: `{"q": "x", "api_key": "${SECRET}"}` } },
  },
  {
    name: 'JSON body inside a shell command',
    action: { type: 'shell_exec', command: `curl -d '{"password":"${SECRET}"}' https://x/login` },
  },
  {
    name: 'folded Authorization header',
    action: {
      type: 'tool_call',
      tool: 'http_raw',
      args: { request: `GET / HTTP/1.1\r\nAuthorization: Token a\r\n ${SECRET}\r\n\r\n` },
    },
  },
  {
    name: 'unquoted curl -H header',
    action: { type: 'shell_exec', command: `curl -H X-Api-Key:${SECRET} https://x` },
  },
  {
    name: 'curl -u user:password in a command',
    action: { type: 'shell_exec', command: `curl -u alice:${SECRET} https://x` },
  },
  {
    name: 'curl -u user:password in argv',
    action: { type: 'shell_exec', argv: ['curl', '-u', `alice:${SECRET}`, 'https://x'] },
  },
  {
    name: 'curl -uuser:password attached in argv',
    action: { type: 'shell_exec', argv: ['/usr/bin/curl', `-ualice:${SECRET}`, 'https://x'] },
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
    ['a JSON member', '{"api_key": "sk-live-123", "q": "x"}', `{"api_key": "${R}", "q": "x"}`],
    ['a compact JSON member', '{"q":"x","password":"p"}', `{"q":"x","password":"${R}"}`],
    ['a Python dict member', `{'password': 'hunter2'}`, `{'password': '${R}'}`],
    [
      'a JS object member with an unquoted key',
      `f({ user: 'u', token: "t" })`,
      `f({ user: 'u', token: "${R}" })`,
    ],
    [
      'a JSON value with escaped quotes',
      String.raw`{"token": "tok\"en\\", "q": "x"}`,
      `{"token": "${R}", "q": "x"}`,
    ],
    [
      'shell-escaped JSON in a command',
      String.raw`curl -d "{\"user\":\"u\",\"password\":\"p\\\"w\"}" https://x`,
      String.raw`curl -d "{\"user\":\"u\",\"password\":\"` + R + String.raw`\"}" https://x`,
    ],
    [
      'a folded header value',
      'Authorization: Bearer abc\r\n  def\r\nAccept: json',
      `Authorization: ${R}\r\nAccept: json`,
    ],
    ['a header folded with a tab', 'X-Api-Key: part1\n\tpart2\nHost: h', `X-Api-Key: ${R}\nHost: h`],
    ['an unquoted -H header', 'curl -H X-Api-Key:abc123 https://x', `curl -H X-Api-Key:${R} https://x`],
    [
      'an unquoted --header header',
      'curl --header Authorization:Token123 https://x',
      `curl --header Authorization:${R} https://x`,
    ],
    ['an attached -H header', `curl -HX-Api-Key:a"b c"d https://x`, `curl -HX-Api-Key:${R} https://x`],
    [
      'a quoted header without a space',
      `curl -H 'X-Api-Key:abc' https://x`,
      `curl -H 'X-Api-Key:${R}' https://x`,
    ],
    ['curl -u user:password', 'curl -u alice:s3cret https://x', `curl -u alice:${R} https://x`],
    [
      'curl --user user:password',
      'curl --user alice:s3cret -s https://x',
      `curl --user alice:${R} -s https://x`,
    ],
    ['curl -uuser:password', 'curl -ualice:s3cret https://x', `curl -ualice:${R} https://x`],
    ['curl --user=user:password', 'curl --user=alice:s3cret https://x', `curl --user=alice:${R} https://x`],
    ['curl -sSu in a cluster', 'curl -sSu alice:s3cret https://x', `curl -sSu alice:${R} https://x`],
    ['a quoted curl -u value', `curl -u 'alice:s3 cret' https://x`, `curl -u 'alice:${R}' https://x`],
    ['curl -u with the key as user name', 'curl -u sk_live_123: https://x', `curl -u ${R}: https://x`],
    [
      'curl --proxy-user',
      'curl --proxy-user bob:pw -x p https://x',
      `curl --proxy-user bob:${R} -x p https://x`,
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
    ['a JSON value that mentions a secret word', '{"query": "password reset", "page": "2"}'],
    ['a JSON value that is a secret word', '{"q": "password", "k": "token"}'],
    ['non-secret JSON members', `{"user": "u", 'max_tokens': '5', key: "k"}`],
    ['curl -u with a URL and no user:password', 'curl -u https://x'],
    ['curl -u with a user name only', 'curl -u alice https://x'],
    ['docker -u uid:gid', 'docker run -u 1000:1000 img'],
    ['ssh -p', 'ssh -p 22 host'],
    ['curl --user-agent', 'curl --user-agent=a:b https://x'],
    ['a continued line after a non-secret header', 'Subject: hi\n  there: you\nsecond line'],
    ['an indented second line of plain text', 'Dear team,\n  the token rotation is done: see notes'],
    ['a non-secret unquoted -H header', 'curl -H Accept:json -H X-Trace:1 https://x'],
    ['grep -H and df -H', 'grep -H pattern file; df -H /'],
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

  // Hostile strings for the JSON, folded-header, -H and -u rules: they must finish and return a string.
  it.each([
    ['{"a":"', '{"a":"'.repeat(200_000)],
    ['{"password":"', '{"password":"'.repeat(100_000)],
    ['escaped JSON keys', String.raw`\"token\": \"`.repeat(100_000)],
    ['backslashes in a JSON value', `{"token": "${'\\'.repeat(500_000)}`],
    ['{a:', '{a:'.repeat(300_000)],
    ['curl -H -H -H', `curl${' -H'.repeat(300_000)}`],
    ['curl -HX-', `curl -H${'X-'.repeat(500_000)}`],
    ['curl -u -u -u', `curl${' -u'.repeat(300_000)}`],
    ['curl -uuu', `curl -${'u'.repeat(1_000_000)}`],
    ['curl -u then quotes', `curl -u '${"a'".repeat(500_000)}`],
    ['folded header lines', `Authorization: x${'\n a'.repeat(300_000)}`],
    ['header lines each folded', 'Token: x\n y\n'.repeat(100_000)],
  ])('completes on 1 MB of %s', (_name, input) => {
    expect(typeof redactString(input)).toBe('string');
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
