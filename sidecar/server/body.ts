// Reads a request body with a hard size limit, refusing early on a declared Content-Length over it.
import type { IncomingMessage } from 'node:http';
import type { ErrorCode } from '../errors.ts';

export type BodyResult = { ok: true; body: Buffer } | { ok: false; code: ErrorCode };

export function readBody(req: IncomingMessage, limit: number): Promise<BodyResult> {
  const declared = Number(req.headers['content-length'] ?? Number.NaN);
  if (Number.isFinite(declared) && declared > limit) {
    req.resume();
    return Promise.resolve({ ok: false, code: 'SIDECAR_ERR_REQUEST_TOO_LARGE' });
  }
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (r: BodyResult) => {
      if (done) return;
      done = true;
      resolve(r);
    };
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        chunks.length = 0;
        req.pause();
        finish({ ok: false, code: 'SIDECAR_ERR_REQUEST_TOO_LARGE' });
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => finish({ ok: true, body: Buffer.concat(chunks) }));
    req.on('error', () => finish({ ok: false, code: 'SIDECAR_ERR_REQUEST_MALFORMED' }));
    req.on('aborted', () => finish({ ok: false, code: 'SIDECAR_ERR_REQUEST_MALFORMED' }));
  });
}

/**
 * `application/json`, any case, with at most a `charset=utf-8` parameter. Anything else is refused rather
 * than sniffed: what is parsed is exactly what was declared.
 */
export function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined) return false;
  const m = /^\s*application\/json\s*(?:;\s*charset\s*=\s*(?:"utf-8"|utf-8)\s*)?$/i.exec(header);
  return m !== null;
}
