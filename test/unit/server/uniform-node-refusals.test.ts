// Two refusals node:http would otherwise answer by itself, with bodies that are not the uniform JSON error of
// docs/errors.md: an HTTP/1.1 request without a Host header (node: 400 with an empty chunked body) and an Expect
// header other than 100-continue (node: 417, not in the registry, empty body). The agent listener turns node's
// Host check off and refuses such a request itself with 400 SIDECAR_ERR_REQUEST_MALFORMED (closing, as node
// did), and answers unmet expectations from `checkExpectation` with the same uniform 400, on every route.
// Absolute-form proxy requests that carry Host, CONNECT (its own event) and HTTP/1.0 requests are unaffected.
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../../../sidecar/errors.ts';
import {
  errorCodeOf,
  rawExchange,
  splitResponses,
  stillServing,
  useSidecarAndUpstream,
} from '../reliability/harness.ts';

const ctx = useSidecarAndUpstream();

/** splitResponses handles content-length bodies; node's own refusals are chunked, so de-chunk the simple case. */
function parse(text: string) {
  const end = text.indexOf('\r\n\r\n');
  const head = text.slice(0, end);
  let body = text.slice(end + 4);
  if (/transfer-encoding: chunked/i.test(head)) {
    const m = /^([0-9a-f]+)\r\n/i.exec(body);
    const n = m ? Number.parseInt(m[1] as string, 16) : 0;
    body = m ? body.slice(m[0].length, m[0].length + n) : '';
  } else {
    body = splitResponses(text)[0]?.body ?? body;
  }
  return { status: Number(head.split(' ')[1]), body };
}

const complete = (t: string) => t.includes('\r\n\r\n') && /\r\n0\r\n\r\n$|}$/.test(t);

describe('refusals node:http would answer by itself are uniform', () => {
  it.each([
    {
      note: 'HTTP/1.1 request without Host',
      req: 'POST /v1/evaluate HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}',
    },
    {
      note: 'HTTP/1.1 absolute-form request without Host',
      req: 'GET http://127.0.0.1:9/ HTTP/1.1\r\n\r\n',
    },
    {
      note: 'Expect header other than 100-continue on /v1/evaluate',
      req: 'POST /v1/evaluate HTTP/1.1\r\nhost: x\r\nexpect: 200-ok\r\ncontent-length: 2\r\n\r\n{}',
    },
    {
      note: 'Expect header other than 100-continue on a proxied request',
      req: 'GET http://127.0.0.1:9/ HTTP/1.1\r\nhost: 127.0.0.1:9\r\nexpect: 200-ok\r\n\r\n',
    },
  ])('$note: status from the registry and a JSON {"error":{"code"}} body', async ({ req }) => {
    const out = await rawExchange(ctx.s.port, [req], { deadlineMs: 3000, stopWhen: complete });
    const { status, body } = parse(out.text);
    const registryStatuses = new Set<number>(Object.values(ERRORS).map((e) => e.status));
    let code: unknown;
    try {
      code = (JSON.parse(body) as { error?: { code?: unknown } }).error?.code;
    } catch {
      code = `not JSON: ${JSON.stringify(body)}`;
    }
    expect({
      statusInRegistry: registryStatuses.has(status),
      code: typeof code === 'string' && code in ERRORS ? 'registry code' : code,
    }).toEqual({ statusInRegistry: true, code: 'registry code' });
    expect({ status, code }).toEqual({ status: 400, code: 'SIDECAR_ERR_REQUEST_MALFORMED' });
    expect(await stillServing(ctx.s.url)).toBe(true);
  });

  it('a request without Host closes the connection; the next pipelined request is not answered', async () => {
    const out = await rawExchange(
      ctx.s.port,
      ['GET /healthz HTTP/1.1\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n'],
      { deadlineMs: 3000 },
    );
    const responses = splitResponses(out.text);
    expect(responses.map((r) => r.status)).toEqual([400]);
    expect(responses[0]?.headers.connection).toBe('close');
    expect(out.closed).toBe(true);
  });

  it('an unmet expectation keeps the connection: the body is drained and the next request answered', async () => {
    const out = await rawExchange(
      ctx.s.port,
      [
        'POST /v1/evaluate HTTP/1.1\r\nhost: x\r\nexpect: 200-ok\r\ncontent-length: 2\r\n\r\n{}' +
          'GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n',
      ],
      { deadlineMs: 3000 },
    );
    const responses = splitResponses(out.text);
    expect(responses.map((r) => r.status)).toEqual([400, 200]);
    expect(errorCodeOf(responses[0]?.body ?? '')).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
  });
});

describe('what still passes', () => {
  it('an absolute-form proxy request with Host is proxied', async () => {
    const req = `GET http://127.0.0.1:${ctx.up.port}/p HTTP/1.1\r\nhost: 127.0.0.1:${ctx.up.port}\r\nconnection: close\r\n\r\n`;
    const out = await rawExchange(ctx.s.port, [req], { deadlineMs: 3000 });
    const responses = splitResponses(out.text);
    expect(responses.map((r) => r.status)).toEqual([200]);
    expect(responses[0]?.body).toBe('hello from upstream');
  });

  it('a CONNECT without Host is still tunnelled (CONNECT has its own event)', async () => {
    const out = await rawExchange(ctx.s.port, [`CONNECT 127.0.0.1:${ctx.up.port} HTTP/1.1\r\n\r\n`], {
      deadlineMs: 3000,
      stopWhen: (t) => t.includes('\r\n\r\n'),
    });
    expect(out.text).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('an HTTP/1.0 request needs no Host', async () => {
    const out = await rawExchange(ctx.s.port, ['GET /healthz HTTP/1.0\r\n\r\n'], { deadlineMs: 3000 });
    expect(out.text).toMatch(/^HTTP\/1\.1 200 /);
  });

  it('Expect: 100-continue still works', async () => {
    const allow = '{"type":"file_read","path":"/data/a"}';
    const req = `POST /v1/evaluate HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-type: application/json\r\ncontent-length: ${allow.length}\r\nconnection: close\r\n\r\n`;
    const out = await rawExchange(ctx.s.port, [req, 20, allow], { deadlineMs: 3000 });
    expect(out.text).toMatch(/^HTTP\/1\.1 100 Continue\r\n\r\n/);
    const responses = splitResponses(out.text.replace(/^HTTP\/1\.1 100 Continue\r\n\r\n/, ''));
    expect(responses.map((r) => r.status)).toEqual([200]);
    expect(JSON.parse(responses[0]?.body ?? '{}')).toMatchObject({ effect: 'ALLOW' });
  });
});
