import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // Docker suites build images and start stacks: generous timeouts here only.
          testTimeout: 600_000,
          hookTimeout: 900_000,
          fileParallelism: false,
          // No registry is reachable, so the Ryuk reaper image cannot be pulled; every suite removes what it starts.
          env: { TESTCONTAINERS_RYUK_DISABLED: 'true' },
        },
      },
    ],
  },
});
