// Decision lines skip the root logger's redaction pass (canonicalLineLogger). These are the shapes the evaluate,
// tools and model gateways write, filled with values that look like secrets: the bytes must be what the root
// logger, redaction and all, would have written, so skipping the pass hides nothing it would have hidden.
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { REDACT_PATHS } from '../../../sidecar/cli/logger.ts';
import { canonicalLineLogger, DECISION_MSG, F } from '../../../sidecar/server/log-fields.ts';
import { captureLines } from '../../support/log-capture.ts';

const LINES: Array<{ name: string; fields: Record<string, unknown> }> = [
  {
    name: 'evaluate',
    fields: {
      [F.decisionId]: 'd',
      [F.kind]: 'evaluate',
      [F.effect]: 'DENY',
      [F.rule]: 'token',
      [F.reason]: 'password',
      [F.durationMs]: 0.2,
    },
  },
  {
    name: 'tools',
    fields: {
      [F.decisionId]: 'd',
      [F.kind]: 'tool',
      rpc_method: 'tools/call',
      tool: 'api_key',
      [F.effect]: 'ALLOW',
      [F.rule]: null,
      [F.reason]: 'matched',
      upstream: 'secret',
      [F.errorCode]: 'SIDECAR_ERR_UPSTREAM_INVALID',
      [F.upstreamError]: 'Authorization: Bearer abc',
      [F.durationMs]: 1.5,
    },
  },
  {
    name: 'model',
    fields: {
      [F.decisionId]: 'd',
      [F.agent]: 'a',
      [F.kind]: 'model',
      provider: 'anthropic',
      model: 'token',
      stream: true,
      [F.effect]: 'ALLOW',
      [F.rule]: 'r',
      [F.reason]: 'matched',
      [F.status]: 200,
      tools_removed: ['password', 'token'],
      usage: {
        input_tokens: 1,
        output_tokens: 2,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
      },
      cost_usd: 0.001,
      reserved: { tokens: 10, usd: 0.01 },
      settlement: 'forwarded',
      [F.durationMs]: 3,
    },
  },
];

describe('canonicalLineLogger on every gateway line shape', () => {
  it.each(LINES)('$name: byte for byte what the root logger writes', ({ fields }) => {
    const options = { redact: { paths: REDACT_PATHS, censor: '[REDACTED]' }, base: null, timestamp: false };
    const redacted = captureLines();
    const skipped = captureLines();
    pino(options, redacted.stream).info(fields, DECISION_MSG);
    canonicalLineLogger(pino(options, skipped.stream)).info(fields, DECISION_MSG);
    expect(redacted.lines).toHaveLength(1);
    expect(skipped.lines).toEqual(redacted.lines);
    expect(redacted.lines[0]).not.toContain('[REDACTED]');
  });
});
