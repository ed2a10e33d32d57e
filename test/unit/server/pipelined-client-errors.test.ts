// A malformed request pipelined behind one the sidecar is still answering asynchronously (an evaluation awaiting
// its audit write, a proxied request awaiting its upstream) must not overtake that answer. node:http reports the
// parse error as soon as it reads the bad bytes; the agent listener's clientError handler waits until every
// response already on the socket has finished, then writes the uniform JSON 400 and closes the connection
// (docs/reliability.md: "the good ones answered, then 400 and close"). Without the wait the agent reads the 400 as
// the answer to its evaluation, and the decision it was made (and audited) is lost.
import { describe, expect, it } from 'vitest';
import {
  auditEntries,
  errorCodeOf,
  rawExchange,
  splitResponses,
  startFaultyUpstream,
  stillServing,
  useSidecarAndUpstream,
} from '../reliability/harness.ts';

const ctx = useSidecarAndUpstream();

const allow = '{"type":"file_read","path":"/data/a"}';
const evaluateReq = `POST /v1/evaluate HTTP/1.1\r\nhost: sidecar\r\ncontent-type: application/json\r\ncontent-length: ${allow.length}\r\n\r\n${allow}`;

const malformed = [
  { note: 'garbage request line', bad: 'BROKEN LINE\r\n\r\n' },
  { note: 'header without colon', bad: 'GET /healthz HTTP/1.1\r\nnocolon\r\n\r\n' },
  {
    note: 'CL and TE together',
    bad: 'POST /v1/evaluate HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n',
  },
];

describe('a malformed request pipelined behind an asynchronous answer', () => {
  it.each(malformed)(
    '$note behind an evaluation: 200 (audited) first, then 400 and close',
    async ({ bad }) => {
      const before = (await auditEntries(ctx.s.auditPath)).length;
      const out = await rawExchange(ctx.s.port, [evaluateReq + bad], { deadlineMs: 3000 });
      const responses = splitResponses(out.text);
      const audited = (await auditEntries(ctx.s.auditPath)).length - before;
      // The evaluation was decided and audited; the agent must get its answer, not a 400 in its place.
      expect({ audited, statuses: responses.map((r) => r.status) }).toEqual({
        audited: 1,
        statuses: [200, 400],
      });
      expect(JSON.parse(responses[0]?.body ?? '{}')).toMatchObject({ effect: 'ALLOW' });
      expect(errorCodeOf(responses[1]?.body ?? '')).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
      expect(responses[1]?.headers.connection).toBe('close');
      expect(out.closed).toBe(true);
      expect(await stillServing(ctx.s.url)).toBe(true);
    },
  );

  it('behind a proxied request: the upstream answer is relayed first, then 400 and close', async () => {
    const proxied = `GET http://127.0.0.1:${ctx.up.port}/p HTTP/1.1\r\nhost: 127.0.0.1:${ctx.up.port}\r\n\r\n`;
    const out = await rawExchange(ctx.s.port, [`${proxied}BROKEN LINE\r\n\r\n`], { deadlineMs: 3000 });
    const responses = splitResponses(out.text);
    expect(responses.map((r) => r.status)).toEqual([200, 400]);
    expect(responses[0]?.body).toBe('hello from upstream');
    expect(errorCodeOf(responses[1]?.body ?? '')).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
    expect(out.closed).toBe(true);
  });

  it('behind an evaluation and a queued health check: both answered in order, then 400 and close', async () => {
    // The health answer is ready at once but queued behind the evaluation; the 400 must wait for it too.
    const health = 'GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n';
    const out = await rawExchange(ctx.s.port, [`${evaluateReq}${health}BROKEN LINE\r\n\r\n`], {
      deadlineMs: 3000,
    });
    const responses = splitResponses(out.text);
    expect(responses.map((r) => r.status)).toEqual([200, 200, 400]);
    expect(JSON.parse(responses[0]?.body ?? '{}')).toMatchObject({ effect: 'ALLOW' });
    expect(JSON.parse(responses[1]?.body ?? '{}')).toEqual({ status: 'ok' });
    expect(out.closed).toBe(true);
  });

  it('more garbage while the answer is still in flight: still one 400, after the answer', async () => {
    // node reports the parse error again for every later chunk; the agent still sees its answer, then one 400.
    const slow = await startFaultyUpstream({ kind: 'trickle', everyMs: 30, bytes: 4 });
    try {
      const proxied = `GET http://127.0.0.1:${slow.port}/p HTTP/1.1\r\nhost: 127.0.0.1:${slow.port}\r\n\r\n`;
      const out = await rawExchange(
        ctx.s.port,
        [
          `${proxied}BROKEN LINE\r\n\r\n`,
          10,
          'MORE GARBAGE\r\n\r\n',
          10,
          'GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n',
        ],
        { deadlineMs: 3000 },
      );
      const responses = splitResponses(out.text);
      expect(responses.map((r) => r.status)).toEqual([200, 400]);
      expect(responses[0]?.body).toBe('tttt');
      expect(out.text.match(/HTTP\/1\.1 /g)).toHaveLength(2);
      expect(out.closed).toBe(true);
    } finally {
      await slow.close();
    }
  });

  it('behind an evaluation, a request whose body is cut off by FIN: the evaluation answered, then 400', async () => {
    const cut =
      'POST /v1/evaluate HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\nabc';
    const before = (await auditEntries(ctx.s.auditPath)).length;
    const out = await rawExchange(ctx.s.port, [evaluateReq + cut], { endAfter: true, deadlineMs: 3000 });
    const responses = splitResponses(out.text);
    expect(responses.map((r) => r.status)).toEqual([200, 400]);
    expect(errorCodeOf(responses[1]?.body ?? '')).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
    expect(out.closed).toBe(true);
    expect((await auditEntries(ctx.s.auditPath)).length - before).toBe(1);
  });

  it('with nothing in flight the 400 is written at once, as before', async () => {
    const out = await rawExchange(ctx.s.port, ['BROKEN LINE\r\n\r\n'], { deadlineMs: 3000 });
    const responses = splitResponses(out.text);
    expect(responses.map((r) => r.status)).toEqual([400]);
    expect(errorCodeOf(responses[0]?.body ?? '')).toBe('SIDECAR_ERR_REQUEST_MALFORMED');
    expect(out.closed).toBe(true);
  });
});
