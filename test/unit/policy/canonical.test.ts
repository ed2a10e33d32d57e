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

  // Values already in key order go to JSON.stringify; these are the ones where JSON.stringify alone would differ
  // from the definition, each in key order so that only the shape check keeps them off the native path.
  it.each([
    { name: 'a Date (toJSON)', value: { a: new Date(0) }, want: '{"a":{}}' },
    { name: 'a Buffer (toJSON)', value: { a: Buffer.from('hi') }, want: '{"a":{"0":104,"1":105}}' },
    {
      name: 'a non-enumerable toJSON',
      value: { a: Object.defineProperty({ z: 1 }, 'toJSON', { value: () => 'x', enumerable: false }) },
      want: '{"a":{"z":1}}',
    },
    { name: 'a boxed string', value: [new String('ab')], want: '[{"0":"a","1":"b"}]' },
    { name: 'a boxed number', value: { n: new Number(1) }, want: '{"n":{}}' },
    { name: 'integer-like keys', value: { '9': 'a', '10': 'b' }, want: '{"10":"b","9":"a"}' },
    {
      name: 'a class instance',
      value: {
        a: new (class {
          x = 1;
          y = 2;
        })(),
      },
      want: '{"a":{"x":1,"y":2}}',
    },
    {
      name: 'a null-prototype object',
      value: Object.assign(Object.create(null), { a: 1, b: [2] }),
      want: '{"a":1,"b":[2]}',
    },
    { name: 'a Map', value: { m: new Map([['k', 1]]) }, want: '{"m":{}}' },
    { name: 'negative zero', value: { z: -0 }, want: '{"z":0}' },
    { name: 'undefined items and members', value: { a: [undefined], b: undefined }, want: '{"a":[null]}' },
  ])('$name', ({ value, want }) => {
    expect(canonicalJson(value)).toBe(want);
    expect(canonicalJson(value)).toBe(reference(value));
  });

  it('matches the reference for any JSON value already in key order (the native path)', () => {
    const inKeyOrder = (v: unknown): unknown => {
      if (Array.isArray(v)) return v.map(inKeyOrder);
      if (v === null || typeof v !== 'object') return v;
      const obj = v as Record<string, unknown>;
      return Object.fromEntries(
        Object.keys(obj)
          .sort()
          .map((k) => [k, inKeyOrder(obj[k])]),
      );
    };
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        expect(canonicalJson(inKeyOrder(v))).toBe(reference(v));
      }),
      { numRuns: 2000 },
    );
  });

  it.each<{ name: string; value: unknown }>([
    { name: 'NaN', value: Number.NaN },
    { name: 'Infinity in a sorted object', value: { a: 1, b: Number.POSITIVE_INFINITY } },
    { name: 'a function member', value: { f: () => 1 } },
    { name: 'a function member after sorted keys', value: { a: 1, f: () => 1 } },
    { name: 'a function in an array', value: [1, () => 1] },
    { name: 'a symbol member', value: { a: Symbol('s') } },
    { name: 'a bigint member', value: { a: 1n } },
    { name: 'undefined itself', value: undefined },
  ])('refuses what JSON cannot carry: $name', ({ value }) => {
    expect(() => canonicalJson(value)).toThrow(TypeError);
  });
});
