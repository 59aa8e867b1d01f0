// One transfer for bench/offsite.ts to measure from the outside, with the toolkit's own code and
// nothing else loaded: `upload <file> <record.json>` or `download <key> <dest>`. Settings come from
// the OFFSITE_* variables, the test server's certificate from NODE_EXTRA_CA_CERTS.
import fs from 'node:fs'
import { backupRecordSchema } from '../lib/db/backup-index.ts'
import { downloadBackup } from '../lib/offsite/download.ts'
import { offsiteSettings } from '../lib/core/offsite-config.ts'
import { uploadBackup } from '../lib/offsite/upload.ts'

const [operation, first = '', second = ''] = process.argv.slice(2)
const settings = offsiteSettings(process.env)
if (!settings) throw new Error('OFFSITE_S3_BUCKET is not set')
if (operation === 'upload') {
  const record = backupRecordSchema.parse(JSON.parse(fs.readFileSync(second, 'utf8')))
  process.stdout.write(JSON.stringify(await uploadBackup(settings, first, record)) + '\n')
} else if (operation === 'download') {
  const { file } = await downloadBackup(settings, first, second)
  process.stdout.write(JSON.stringify({ file }) + '\n')
} else {
  throw new Error(`usage: offsite-run.ts upload <file> <record.json> | download <key> <dest>`)
}
