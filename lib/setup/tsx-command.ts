import path from 'node:path'

// The design card's own line, `tsx scripts/deploy.ts v1.2.0` on the droplet, needs a `tsx` on
// PATH: this toolkit's own (never `npx tsx`, which goes to the network), run by the node that runs
// setup (absolute: node need not be on the deploy user's PATH), for root and the deploy user alike.
export const TSX_COMMAND = '/usr/local/bin/tsx'
/** The line that marks the file as ours: one without it (an operator's own tsx) is left alone. */
export const TSX_MARK = '# toogoodtogo setup-droplet: the toolkit\'s own tsx'

export function tsxWrapper(nodePath: string, toolkitDir: string): string {
  const cli = path.join(toolkitDir, 'node_modules', 'tsx', 'dist', 'cli.mjs')
  return ['#!/bin/sh', TSX_MARK, `# (${toolkitDir}), so that \`tsx scripts/deploy.ts v1.2.0\` works there; rewritten by each setup run.`, `exec ${shellQuote(nodePath)} ${shellQuote(cli)} "$@"`, ''].join('\n')
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`
}
