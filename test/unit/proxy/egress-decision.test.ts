// The canonical proxy line: the same bytes whether or not the root logger's redaction runs over it, so writing it
// through canonicalLineLogger (which skips that pass) hides nothing the root logger would have hidden.
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { REDACT_PATHS } from '../../../sidecar/cli/logger.ts';
import { logProxyLine, type ProxyLogRecord } from '../../../sidecar/proxy/egress-decision.ts';
import { canonicalLineLogger } from '../../../sidecar/server/log-fields.ts';
import { captureLines } from '../../support/log-capture.ts';

// Values that look like what the redaction paths name: none of them is inside an object, so none is redacted.
const records: ProxyLogRecord[] = [
  {
    method: 'GET',
    host: 'token.example',
    port: 443,
    status: 200,
    bytesIn: 0,
    bytesOut: 1024,
    durationMs: 1.25,
    verdict: {
      decisionId: 'd-1',
      effect: 'ALLOW',
      decision: { effect: 'ALLOW', rule: 'password', reason: 'matched' },
      policyDigest: 'sha256:x',
    },
  },
  {
    method: 'POST',
    host: 'http://user:secret@api_key.example/?token=t',
    port: 0,
    status: 400,
    bytesIn: 0,
    bytesOut: 0,
    durationMs: 0.5,
    reason: 'authorization',
    errorCode: 'SIDECAR_ERR_REQUEST_MALFORMED',
    upstreamError: 'secret',
  },
];

describe('canonicalLineLogger', () => {
  it.each(records.map((r) => [r.host, r] as const))(
    '%s: the line is byte for byte what the root logger writes',
    (_host, rec) => {
      const options = { redact: { paths: REDACT_PATHS, censor: '[REDACTED]' }, base: null, timestamp: false };
      const redacted = captureLines();
      const skipped = captureLines();
      const root = pino(options, redacted.stream).child({ component: 'proxy' });
      logProxyLine(root, 'agent-1', rec);
      logProxyLine(
        canonicalLineLogger(pino(options, skipped.stream).child({ component: 'proxy' })),
        'agent-1',
        rec,
      );
      expect(redacted.lines).toHaveLength(1);
      expect(skipped.lines).toEqual(redacted.lines);
      expect(redacted.lines[0]).not.toContain('[REDACTED]');
    },
  );

  it('leaves the logger it came from redacting as before', () => {
    const out = captureLines();
    const root = pino({ redact: { paths: REDACT_PATHS, censor: '[REDACTED]' }, base: null }, out.stream);
    canonicalLineLogger(root).info({ upstream: { token: 'abc' } }, 'not a canonical line');
    root.info({ upstream: { token: 'abc' } }, 'an error line');
    expect(out.lines[0]).toContain('"token":"abc"');
    expect(out.lines[1]).toContain('"token":"[REDACTED]"');
  });
});
