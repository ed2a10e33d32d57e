// The one root logger (pino JSON on stdout), created by the CLI and passed down; secrets are redacted at the source.
import pino, { type Logger } from 'pino';

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["proxy-authorization"]',
  'req.headers["x-api-key"]',
  'req.headers.cookie',
  'headers.authorization',
  'headers["x-api-key"]',
  '*.api_key',
  '*.apiKey',
  '*.token',
  '*.password',
  '*.secret',
];

export function createRootLogger(opts: { level?: string; pretty?: boolean } = {}): Logger {
  const options: pino.LoggerOptions = {
    level: opts.level ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[REDACTED]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  // pino-pretty is a development dependency: ask for it only when wanted (runs off the main thread).
  if (opts.pretty)
    return pino({ ...options, transport: { target: 'pino-pretty', options: { colorize: true } } });
  // Asynchronous stdout: a synchronous write per decision line was a measurable share of proxy CPU. No minimum
  // buffer length, so lines (the readiness line above all) still go out as soon as the event loop is free.
  // The audit chain, not this log, is the durable record; flushLogger() runs on shutdown.
  return pino(options, pino.destination({ dest: 1, sync: false }));
}

/** Writes out whatever the buffered destination still holds. */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}
