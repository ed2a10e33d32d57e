// The admin API's bearer token: loading it from its file and checking a presented one in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { SidecarError } from '../errors.ts';

export const MIN_ADMIN_TOKEN_LENGTH = 32;

// RFC 6750 b64token: what a token may contain so that it survives an Authorization header unchanged.
const TOKEN_CHARS = /^[A-Za-z0-9\-._~+/]+=*$/;

/**
 * Reads the token file (surrounding whitespace trimmed). The file's permissions are the operator's to set
 * (see docs/admin-api.md): Kubernetes mounts secrets 0644 by default, so refusing readable files would refuse
 * the common case; what protects the token is that the agent's container does not mount it.
 */
export async function loadAdminToken(path: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new SidecarError('SIDECAR_ERR_CONFIG_INVALID', `admin token file ${path}: ${why}`, { cause: err });
  }
  const token = text.trim();
  if (token.length < MIN_ADMIN_TOKEN_LENGTH) {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `admin token file ${path}: the token must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters`,
    );
  }
  if (!TOKEN_CHARS.test(token)) {
    throw new SidecarError(
      'SIDECAR_ERR_CONFIG_INVALID',
      `admin token file ${path}: the token may only contain letters, digits and - . _ ~ + / =`,
    );
  }
  return token;
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value, 'utf8').digest();
}

/**
 * Whether `header` is `Bearer <token>`. Both sides are hashed first, so the comparison is constant time and
 * never throws, whatever the length of what was presented.
 */
export function checkBearer(header: string | string[] | undefined, token: string): boolean {
  const value = typeof header === 'string' ? header : '';
  const match = /^Bearer +(\S+) *$/i.exec(value);
  const presented = match?.[1] ?? '';
  const equal = timingSafeEqual(digest(presented), digest(token));
  return equal && presented !== '' && token !== '';
}
