// Builds the project's images once per test run from the real Dockerfiles (no registry: NODE_IMAGE is local in CI).
import { resolve } from 'node:path';
import { GenericContainer } from 'testcontainers';

export const REPO_ROOT = resolve(import.meta.dirname, '../../..');
export const NODE_IMAGE = process.env['NODE_IMAGE'] ?? 'node:24-bookworm-slim';

const built = new Map<string, Promise<string>>();

/** Builds `compose/images/<name>.Dockerfile` as `agent-sidecar-<name>:test` and returns the tag. */
export function buildImage(name: string): Promise<string> {
  let p = built.get(name);
  if (!p) {
    const tag = `agent-sidecar-${name}:test`;
    p = GenericContainer.fromDockerfile(REPO_ROOT, `compose/images/${name}.Dockerfile`)
      .withBuildArgs({ NODE_IMAGE })
      .build(tag, { deleteOnExit: false })
      .then(() => tag);
    built.set(name, p);
  }
  return p;
}
