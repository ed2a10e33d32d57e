// Every error code is documented in docs/errors.md with its status, and nothing undocumented is listed.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERRORS } from '../../../sidecar/errors.ts';

const doc = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
const documented = new Map(
  [...doc.matchAll(/^\| `(SIDECAR_ERR_[A-Z_]+)` \| (\d{3}|—) \|/gm)].map((m) => [
    m[1] as string,
    m[2] as string,
  ]),
);

describe('error registry', () => {
  it.each(Object.entries(ERRORS))('%s is documented with its status', (code, spec) => {
    expect(documented.has(code)).toBe(true);
    const status = documented.get(code);
    if (status !== '—') expect(Number(status)).toBe(spec.status);
  });

  it('documents no code that does not exist', () => {
    expect([...documented.keys()].filter((c) => !(c in ERRORS))).toEqual([]);
  });

  it('codes are SIDECAR_ERR_<UPPER_SNAKE> and messages name nothing specific', () => {
    for (const [code, spec] of Object.entries(ERRORS)) {
      expect(code).toMatch(/^SIDECAR_ERR_[A-Z]+(_[A-Z]+)*$/);
      expect(spec.message).not.toMatch(/\/|rule|tool_|\.yaml/);
    }
  });
});
