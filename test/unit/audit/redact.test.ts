import { describe, expect, it } from 'vitest';
import { isSecretKey, REDACTED, redact } from '../../../sidecar/audit/redact.ts';

const R = REDACTED;

describe('redact', () => {
  const cases: { name: string; input: unknown; want: unknown }[] = [
    {
      name: 'authorization and proxy-authorization headers',
      input: {
        headers: { authorization: 'Bearer abc', 'Proxy-Authorization': 'Basic dXNlcjpwYXNz', accept: '*/*' },
      },
      want: { headers: { authorization: R, 'Proxy-Authorization': R, accept: '*/*' } },
    },
    {
      name: 'api key spellings',
      input: {
        'x-api-key': 'k1',
        api_key: 'k2',
        apiKey: 'k3',
        APIKey: 'k4',
        'X-Goog-Api-Key': 'k5',
        apikey: 'k6',
      },
      want: { 'x-api-key': R, api_key: R, apiKey: R, APIKey: R, 'X-Goog-Api-Key': R, apikey: R },
    },
    {
      name: 'tokens, secrets, passwords, cookies, credentials, private keys',
      input: {
        token: 't',
        access_token: 't',
        refreshToken: 't',
        client_secret: 's',
        password: 'p',
        passwd: 'p',
        cookie: 'c',
        'set-cookie': ['a=1', 'b=2'],
        credentials: { user: 'u', pass: 'p' },
        private_key: '-----BEGIN',
        privateKey: '-----BEGIN',
      },
      want: {
        token: R,
        access_token: R,
        refreshToken: R,
        client_secret: R,
        password: R,
        passwd: R,
        cookie: R,
        'set-cookie': R,
        credentials: R,
        private_key: R,
        privateKey: R,
      },
    },
    {
      name: 'counters and ordinary keys are kept',
      input: {
        max_tokens: 256,
        usage: { input_tokens: 12, output_tokens: 40 },
        key: 'cache-1',
        author: 'ann',
        tokenizer: 'x',
      },
      want: {
        max_tokens: 256,
        usage: { input_tokens: 12, output_tokens: 40 },
        key: 'cache-1',
        author: 'ann',
        tokenizer: 'x',
      },
    },
    {
      name: 'nested objects and arrays',
      input: { args: { items: [{ name: 'a', secret: 'x' }, { name: 'b' }] } },
      want: { args: { items: [{ name: 'a', secret: R }, { name: 'b' }] } },
    },
    {
      name: 'URL userinfo',
      input: { url: 'https://alice:hunter2@example.com/path' },
      want: { url: `https://${R}@example.com/path` },
    },
    {
      name: 'URL secret query and fragment parameters, others kept as spelled',
      input: { url: 'https://api.example.com/v1?q=a%20b&api_key=k&access_token=t#id_token=x&state=s' },
      want: {
        url: `https://api.example.com/v1?q=a%20b&api_key=${R}&access_token=${R}#id_token=${R}&state=s`,
      },
    },
    {
      name: 'URL without secrets is unchanged',
      input: 'HTTPS://Example.com/a?b=1&per_page=50',
      want: 'HTTPS://Example.com/a?b=1&per_page=50',
    },
    {
      name: 'URLs inside a command string',
      input: { command: 'curl -s https://u:p@host.example/x?token=abc | jq .' },
      want: { command: `curl -s https://${R}@host.example/x?token=${R} | jq .` },
    },
    {
      name: 'non-http URLs lose a user:password but keep their query',
      input: 'ftp://user:pw@host/file?token=t',
      want: `ftp://${R}@host/file?token=t`,
    },
    {
      name: 'bearer tokens anywhere in a string',
      input: 'sent with Bearer eyJhbGciOi.payload.sig to upstream',
      want: `sent with Bearer ${R} to upstream`,
    },
    {
      name: 'header lines and assignments in argv',
      input: {
        argv: [
          'curl',
          '-H',
          'Authorization: Basic abc',
          '-H',
          'Accept: json',
          'GITHUB_TOKEN=ghp_1',
          '--password=x',
        ],
      },
      want: {
        argv: [
          'curl',
          '-H',
          `Authorization: ${R}`,
          '-H',
          'Accept: json',
          `GITHUB_TOKEN=${R}`,
          `--password=${R}`,
        ],
      },
    },
    {
      name: 'argv flag followed by its secret value',
      input: ['mysql', '--password', 'hunter2', '--user', 'root'],
      want: ['mysql', '--password', R, '--user', 'root'],
    },
    {
      name: 'header pairs',
      input: [
        ['authorization', 'x'],
        ['accept', 'y'],
      ],
      want: [
        ['authorization', R],
        ['accept', 'y'],
      ],
    },
    {
      name: 'JSON semantics: dates, undefined, functions, non-finite numbers, bigints',
      input: {
        at: new Date(0),
        gone: undefined,
        fn: () => 1,
        list: [undefined, Number.NaN],
        n: Number.POSITIVE_INFINITY,
        big: 10n,
      },
      want: { at: '1970-01-01T00:00:00.000Z', list: [null, null], n: null, big: '10' },
    },
    {
      name: 'primitives pass through',
      input: [1, true, null, 'plain'],
      want: [1, true, null, 'plain'],
    },
  ];

  it.each(cases)('$name', ({ input, want }) => {
    expect(redact(input)).toEqual(want);
  });

  it('does not modify its input', () => {
    const input = { headers: { authorization: 'Bearer abc' }, url: 'https://u:p@h/' };
    redact(input);
    expect(input).toEqual({ headers: { authorization: 'Bearer abc' }, url: 'https://u:p@h/' });
  });

  it('replaces cycles instead of recursing forever', () => {
    const a: Record<string, unknown> = { name: 'a' };
    a['self'] = a;
    expect(redact(a)).toEqual({ name: 'a', self: '[Circular]' });
  });

  it('keeps a "__proto__" member as data', () => {
    const input = JSON.parse('{"__proto__": {"polluted": true}}') as unknown;
    const out = redact(input) as Record<string, unknown>;
    expect(Object.getPrototypeOf(out)).toBe(Object.prototype);
    expect(Object.keys(out)).toEqual(['__proto__']);
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it.each([
    ['authorization', true],
    ['Proxy-Authorization', true],
    ['x-api-key', true],
    ['subscription-key', true],
    ['X-Amz-Security-Token', true],
    ['session_token', true],
    ['max_tokens', false],
    ['content-type', false],
    ['monkey', false],
  ] as const)('isSecretKey(%s) is %s', (key, want) => {
    expect(isSecretKey(key)).toBe(want);
  });
});
