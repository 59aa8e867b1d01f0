// The layering of lib/ (README, "Layout"), checked by `npm run check:layers` in `npm test`:
// core < commands < db, offsite < release, swarm < setup, status < scripts. A layer imports only
// layers below it, and nothing imports a script (a script's steps that another needs go to lib/).
// .dependency-cruiser-known-violations.json lists the violations this rule set found when it came
// (core/config importing compose and postgres builders, db importing release/health, ...): they are
// still to be untangled, and any new one fails the check.
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'core-imports-nothing-above',
      severity: 'error',
      comment: 'lib/core is what every script runs on: it imports no other folder of lib/',
      from: { path: '^lib/core/' },
      to: { path: '^lib/(?!core/)' },
    },
    {
      name: 'commands-import-only-core',
      severity: 'error',
      comment: 'lib/commands holds argv builders, one file per tool: they build on lib/core only',
      from: { path: '^lib/commands/' },
      to: { path: '^lib/(?!core/|commands/)' },
    },
    {
      name: 'data-layers-below-release',
      severity: 'error',
      comment: 'lib/db and lib/offsite know nothing of releases, setup or status',
      from: { path: '^lib/(db|offsite)/' },
      to: { path: '^lib/(release|swarm|setup|status)/' },
    },
    {
      name: 'release-below-setup-and-status',
      severity: 'error',
      from: { path: '^lib/release/' },
      to: { path: '^lib/(setup|status)/' },
    },
    {
      name: 'swarm-beside-release',
      severity: 'error',
      comment: 'lib/swarm (the runtime on a Docker Swarm) is at the level of lib/release',
      from: { path: '^lib/swarm/' },
      to: { path: '^lib/(setup|status)/' },
    },
    {
      name: 'nothing-imports-a-script',
      severity: 'error',
      comment: 'a step two scripts share lives in lib/, not in the script that had it first',
      from: { path: '^(lib|scripts)/' },
      to: { path: '^scripts/' },
    },
    {
      name: 'no-cycles',
      severity: 'error',
      comment: 'a cycle made only of type imports is erased at run time and is allowed',
      from: { path: '^(lib|scripts)/' },
      to: { circular: true, viaOnly: { dependencyTypesNot: ['type-only'] } },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    exclude: { path: '^(node_modules|test|bench|demo)/' },
  },
}
