// The forward proxy's resource limits: defaults, validation, and the byte counter that enforces the body limit.
import { Transform, type TransformCallback } from 'node:stream';
import { SidecarError } from '../errors.ts';

export interface ProxyLimits {
  /** Largest request body forwarded upstream. */
  readonly maxBodyBytes: number;
  /** From request sent to response headers received. */
  readonly upstreamHeadersTimeoutMs: number;
  /** Longest silence between two chunks of the upstream response body. */
  readonly upstreamBodyTimeoutMs: number;
  /** A tunnel with no bytes either way for this long is closed. */
  readonly tunnelIdleTimeoutMs: number;
  /** Open tunnels (including ones still being decided) per proxy. */
  readonly maxTunnels: number;
  /** TCP connect to the pinned address, both modes. */
  readonly connectTimeoutMs: number;
}

export const DEFAULT_PROXY_LIMITS: ProxyLimits = Object.freeze({
  maxBodyBytes: 10 * 1024 * 1024,
  upstreamHeadersTimeoutMs: 30_000,
  upstreamBodyTimeoutMs: 60_000,
  tunnelIdleTimeoutMs: 5 * 60_000,
  maxTunnels: 256,
  connectTimeoutMs: 10_000,
});

/** Defaults overlaid with `overrides`, validated and frozen. An unknown key or a non-positive value is refused. */
export function resolveProxyLimits(overrides: Partial<ProxyLimits> = {}): ProxyLimits {
  const merged: Record<string, unknown> = { ...DEFAULT_PROXY_LIMITS };
  for (const [key, value] of Object.entries(overrides)) {
    if (value === undefined) continue;
    if (!Object.hasOwn(DEFAULT_PROXY_LIMITS, key)) {
      throw new SidecarError('SIDECAR_ERR_CONFIG_INVALID', `unknown proxy limit "${key}"`);
    }
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
      throw new SidecarError(
        'SIDECAR_ERR_CONFIG_INVALID',
        `proxy limit ${key} must be a positive integer, got ${String(value)}`,
      );
    }
    merged[key] = value;
  }
  return Object.freeze(merged as unknown as ProxyLimits);
}

/** Raised inside the body stream when the agent sends more than the limit; the proxy answers 413. */
export class BodyTooLargeError extends Error {
  readonly code = 'SIDECAR_BODY_TOO_LARGE';
}

/**
 * Passes bytes through while counting them, and fails the stream once more than `max` went by. The count is what
 * the agent actually sent, so a missing or lying Content-Length cannot get past the limit.
 */
export class ByteLimit extends Transform {
  readonly #max: number;
  bytes = 0;

  constructor(max: number) {
    super();
    this.#max = max;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.#max) {
      callback(new BodyTooLargeError(`request body exceeds ${this.#max} bytes`));
      return;
    }
    callback(null, chunk);
  }
}

/** A constructor option that must be a positive integer (a programming error otherwise: RangeError). */
export function positiveOption(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}
