import { defineConfig } from 'vitest/config'

// Three tiers (README.md, "The two commands"): unit is pure and fast and spawns no process;
// integration uses real processes, PostgreSQL, Redis, git and
// files on the host; e2e uses a real Docker Engine. Integration and e2e files each start their own
// servers, so they run one file at a time to stay within two cores.
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/support/setup-integration.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          globalSetup: ['test/support/setup-e2e.ts'],
          testTimeout: 600_000,
          hookTimeout: 900_000,
          fileParallelism: false,
        },
      },
    ],
  },
})
