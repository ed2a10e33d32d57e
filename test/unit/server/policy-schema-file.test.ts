// The published JSON Schema is generated from the one zod schema and must not drift from it.
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { policyJsonSchema } from '../../../sidecar/policy/schema.ts';

it('docs/policy.schema.json is up to date (regenerate with `npm run schema`)', () => {
  const published = JSON.parse(
    readFileSync(new URL('../../../docs/policy.schema.json', import.meta.url), 'utf8'),
  );
  expect(published).toEqual(policyJsonSchema());
});
