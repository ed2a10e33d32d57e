// The sidecar image, built from its Dockerfile, validates policies inside a container.
import { resolve } from 'node:path';
import { GenericContainer, type StartedTestContainer } from 'testcontainers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildImage, REPO_ROOT } from './support/images.ts';

describe('sidecar image', () => {
  let container: StartedTestContainer;

  beforeAll(async () => {
    const image = await buildImage('sidecar');
    container = await new GenericContainer(image)
      .withEntrypoint(['sleep', 'infinity'])
      .withCopyDirectoriesToContainer([
        { source: resolve(REPO_ROOT, 'policies'), target: '/policies' },
        { source: resolve(REPO_ROOT, 'test/fixtures/image'), target: '/broken' },
      ])
      .start();
  });

  afterAll(async () => {
    await container?.stop();
  });

  it('accepts every shipped policy with `policy check policies/`', async () => {
    const r = await container.exec(['node', '/app/bin/agent-sidecar.js', 'policy', 'check', '/policies']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    for (const agent of [
      'research-agent',
      'coding-agent',
      'deploy-agent',
      'basic-user',
      'support-agent',
      'admin',
    ]) {
      expect(r.stdout).toContain(`(agent ${agent},`);
    }
  });

  it('passes the shipped policy tests', async () => {
    const r = await container.exec(['node', '/app/bin/agent-sidecar.js', 'policy', 'test', '/policies']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/policy tests: \d+ passed, 0 failed/);
  });

  it('rejects a broken policy with file:line:col and exit 2', async () => {
    const r = await container.exec([
      'node',
      '/app/bin/agent-sidecar.js',
      'policy',
      'check',
      '/broken/typo.yaml',
    ]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('/broken/typo.yaml:5:5: rules[0]: unknown key "conditons"');
  });

  it('runs as a non-root user and ships no policy of its own', async () => {
    const id = await container.exec(['id', '-u']);
    expect(id.stdout.trim()).toBe('10001');
    const find = await container.exec([
      'sh',
      '-c',
      'find / -xdev -name "*.yaml" -path "*polic*" -not -path "/policies/*" -not -path "/broken/*" 2>/dev/null',
    ]);
    expect(find.stdout.trim()).toBe('');
  });
});
