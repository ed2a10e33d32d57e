// canonicalJson is the byte form behind audit hashes, approval binding and context-token argument digests:
// checked against a plain reference written from its definition (sorted keys, no whitespace, undefined dropped).
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson } from '../../../sidecar/policy/canonical.ts';

function reference(value: unknown): string {
  if (Array.isArray(value))
    return `[${value.map((v) => (v === undefined ? 'null' : reference(v))).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    const keys = Object.keys(obj)
      .filter((k) => obj[k] !== undefined)
      .sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${reference(obj[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

describe('canonicalJson', () => {
  it.each([
    {
      value: { b: 1, a: [true, null, 'x'], c: { z: 1, y: undefined } },
      want: '{"a":[true,null,"x"],"b":1,"c":{"z":1}}',
    },
    { value: [undefined, 1], want: '[null,1]' },
    { value: {}, want: '{}' },
    { value: [], want: '[]' },
    { value: { only: undefined }, want: '{}' },
    { value: { '\u00e9': 1, e: 2, E: 3 }, want: '{"E":3,"e":2,"\u00e9":1}' },
  ])('$want', ({ value, want }) => {
    expect(canonicalJson(value)).toBe(want);
  });

  it('matches the reference for any JSON value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expect(canonicalJson(v)).toBe(reference(v));
      }),
      { numRuns: 2000 },
    );
  });

  it('refuses what JSON cannot carry', () => {
    expect(() => canonicalJson(Number.NaN)).toThrow(TypeError);
    expect(() => canonicalJson({ f: () => 1 })).toThrow(TypeError);
  });
});
