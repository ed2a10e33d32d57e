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
  // Buffered, asynchronous stdout: lines collect up to 4 KiB and go out in one write, at the latest every 100 ms.
  // A write per line cost either a syscall on the event loop (sync) or a thread-pool round trip (async, ~70 µs of
  // CPU per tools/call measured); batching makes it one per ~15 lines. The readiness line is flushed at once
  // (startSidecar), flushLogger() runs on shutdown, and the audit chain, not this log, is the durable record.
  return pino(options, logDestination(1));
}

/** The sidecar's log destination (stdout in production; a file for the benchmarks, which measure the same thing). */
export function logDestination(dest: number | string) {
  return pino.destination({ dest, sync: false, minLength: 4096, periodicFlush: 100 });
}

/** Writes out whatever the buffered destination still holds. */
export function flushLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => logger.flush(() => resolve()));
}
