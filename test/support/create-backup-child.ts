// Calls createBackup the way deploy.ts's pre-deployment backup does, in a process of its own (so
// NODE_EXTRA_CA_CERTS can trust the test S3 server), and prints the record it returned. Exit 0 with
// a record on stdout proves it returned rather than threw.
import { openContext } from '../../lib/stack/context.ts'
import { configureLog } from '../../lib/core/log.ts'
import { createBackup } from '../../lib/db/backup.ts'

configureLog({ file: process.env.LOG_FILE ?? null, stdoutIsData: true })
const ctx = await openContext()
const record = await createBackup(ctx.cfg, ctx.db, { type: 'pre_deployment', artifactId: 'v1.0.0', reason: null, announce: 'path' })
process.stdout.write(JSON.stringify(record) + '\n')
