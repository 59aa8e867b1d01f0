import fs from 'node:fs'
import path from 'node:path'
import { loadConfig } from '../../lib/core/config.ts'
import { preparePitrRepoDir } from '../../lib/db/pitr.ts'
import { generateKeyPair } from '../../lib/offsite/key-pair.ts'
import { startS3Server, type S3TestServer } from './s3-server.ts'
import { createStack, exec, type Stack } from './stack.ts'
import { WRITER_TABLE } from './writer.ts'

// A stack with point-in-time recovery on, as setup-droplet turns it on: repo1 under BACKUP_DIR,
// owned by the image's postgres user; repo2 in a bucket of the S3 test server, which listens on
// the docker bridge's gateway over TLS so that pgBackRest in the postgres container reaches it.
export interface PitrStack {
  stack: Stack
  s3: S3TestServer | null
  repoDir: string
  /** the postgres server killed, its container and data volume gone, as when the disk is lost */
  destroyDatabase(): Promise<void>
  down(): Promise<void>
}

export async function createPitrStack(opts: { offsite: boolean; archiveTimeout?: number; env?: Record<string, string> }): Promise<PitrStack> {
  const s3 = opts.offsite ? await startS3Server({ host: await bridgeGateway(), verifySignatures: false }) : null
  const stack = createStack('v2')
  const repoDir = path.join(stack.dir, 'backups', 'pgbackrest')
  const offsite: Record<string, string> = s3
    ? {
        PITR_CIPHER_PASSWORD: 'e2e-cipher-passphrase-0123456789',
        // s3rver's certificate is this run's own; the real buckets' are public
        PITR_REPO2_VERIFY_TLS: 'n',
        BACKUP_AGE_RECIPIENT: (await generateKeyPair()).recipient,
        ...s3.env(),
      }
    : {}
  const fileVars = { PITR_ENABLED: 'true', PITR_REPO_DIR: repoDir, PITR_ARCHIVE_TIMEOUT: String(opts.archiveTimeout ?? 60), ...offsite }
  fs.appendFileSync(path.join(stack.dir, '.env.production'), Object.entries(fileVars).map(([k, v]) => `${k}=${v}\n`).join(''))
  Object.assign(stack.env, { KEY_TABLES: WRITER_TABLE, ...(s3 ? { NODE_EXTRA_CA_CERTS: s3.caFile } : {}), ...opts.env })
  await preparePitrRepoDir(loadConfig({ ...stack.env }))
  await stack.up('v1.0.0')
  await stack.psql(`CREATE TABLE ${WRITER_TABLE} (id bigint PRIMARY KEY, note text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`)
  return {
    stack,
    s3,
    repoDir,
    async destroyDatabase() {
      // SIGKILL: no shutdown checkpoint, no last archive run, as when the disk goes
      const killed = await stack.compose(['kill', 'postgres'])
      if (killed.code !== 0) throw new Error(`compose kill postgres: ${killed.stderr}`)
      const removed = await stack.compose(['rm', '--force', '-v', 'postgres'])
      if (removed.code !== 0) throw new Error(`compose rm postgres: ${removed.stderr}`)
      const volume = await exec(['docker', 'volume', 'rm', `${stack.project}_postgres_data`])
      if (volume.code !== 0) throw new Error(`docker volume rm: ${volume.stderr}`)
    },
    async down() {
      await stack.down()
      await s3?.stop()
    },
  }
}

/**
 * The host's address on Docker's default bridge: an address on this host that every container can
 * reach. Read from the bridge's own interface (docker0), not from `docker network inspect`'s IPAM
 * Gateway: a dockerd's first boot (no network store yet) lists the subnet without a Gateway until
 * the daemon restarts (moby/moby#26799), while the interface has its address from the start.
 */
export async function bridgeGateway(): Promise<string> {
  const name = await exec(['docker', 'network', 'inspect', 'bridge', '--format', '{{index .Options "com.docker.network.bridge.name"}}'])
  const bridge = name.code === 0 && name.stdout.trim() ? name.stdout.trim() : 'docker0'
  const r = await exec(['ip', '-4', '-o', 'addr', 'show', 'dev', bridge])
  const address = /\binet (\d+\.\d+\.\d+\.\d+)\//.exec(r.stdout)?.[1]
  if (r.code !== 0 || !address) throw new Error(`no IPv4 address on Docker's default bridge ${bridge}: ${r.stderr || r.stdout}`)
  return address
}
