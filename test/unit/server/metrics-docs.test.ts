// Every `sidecar_*` metric name the docs promise for the runtime exists in the registry: an alert written from the
// docs must be able to fire.
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createMetrics } from '../../../sidecar/server/metrics.ts';

const root = resolve(import.meta.dirname, '../../..');

describe('metric names in the docs match metrics.ts', () => {
  it.each(['docs/audit.md'])('%s', async (file) => {
    const text = await readFile(resolve(root, file), 'utf8');
    const named = [
      ...new Set([...text.matchAll(/`(sidecar_[a-z_]+)(?:\{[^`]*\})?`/g)].map((m) => m[1] as string)),
    ]
      // the model gateway registers its own metrics elsewhere
      .filter((n) => !n.startsWith('sidecar_model_') && n !== 'sidecar_agent');
    const registered = (await createMetrics().registry.getMetricsAsJSON()).map((m) => m.name);
    expect(named.filter((n) => !registered.includes(n))).toEqual([]);
  });
});
