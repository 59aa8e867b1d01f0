import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { z } from 'zod'
import { TOOLKIT_DIR } from '../../lib/core/config.ts'

// Grafana is not a Debian package and was not run here: its provisioning files and the dashboard
// are checked against the parts of Grafana's schemas it needs to load them (provisioning apiVersion
// 1; dashboard JSON model, schemaVersion 38 = Grafana 10). The provisioning files are YAML written
// in JSON syntax (YAML is a superset), so they are parsed here without a YAML library.
const GRAFANA = path.join(TOOLKIT_DIR, 'deployment', 'monitoring', 'grafana')
const read = (file: string): unknown => JSON.parse(fs.readFileSync(path.join(GRAFANA, file), 'utf8'))

const datasources = z.object({
  apiVersion: z.literal(1),
  datasources: z.array(z.object({
    name: z.string().min(1),
    uid: z.string().regex(/^[a-zA-Z0-9_-]{1,40}$/),
    type: z.literal('prometheus'),
    access: z.enum(['proxy', 'direct']),
    url: z.url(),
    isDefault: z.boolean(),
  })).length(1),
}).strict()

const providers = z.object({
  apiVersion: z.literal(1),
  providers: z.array(z.object({
    name: z.string().min(1),
    type: z.literal('file'),
    options: z.object({ path: z.string().startsWith('/') }),
  })).min(1),
}).strict()

const datasourceRef = z.object({ type: z.literal('prometheus'), uid: z.string() }).strict()
const panel = z.object({
  id: z.number().int().positive(),
  type: z.enum(['stat', 'timeseries', 'table', 'gauge', 'bargauge', 'text']),
  title: z.string().min(1),
  datasource: datasourceRef,
  gridPos: z.object({ x: z.number().int().min(0), y: z.number().int().min(0), w: z.number().int().min(1), h: z.number().int().min(1) }).refine((g) => g.x + g.w <= 24, 'a panel wider than the 24-column grid'),
  targets: z.array(z.object({ refId: z.string().regex(/^[A-Z]$/), datasource: datasourceRef, expr: z.string().min(1) })).min(1),
  fieldConfig: z.object({ defaults: z.record(z.string(), z.unknown()), overrides: z.array(z.unknown()) }),
})
const dashboard = z.object({
  uid: z.string().regex(/^[a-zA-Z0-9_-]{1,40}$/),
  title: z.string().min(1),
  schemaVersion: z.number().int().min(36),
  panels: z.array(panel).min(1),
  time: z.object({ from: z.string(), to: z.string() }),
  templating: z.object({ list: z.array(z.unknown()) }),
})

describe('Grafana provisioning', () => {
  const ds = datasources.parse(read('provisioning/datasources/prometheus.yaml'))
  const dashboardFile = 'dashboards/toogoodtogo-overview.json'
  const board = dashboard.parse(read(dashboardFile))

  it('provisions one Prometheus datasource at the compose service, and a file provider', () => {
    expect(ds.datasources[0]?.url).toBe('http://prometheus:9090')
    const provider = providers.parse(read('provisioning/dashboards/toogoodtogo.yaml'))
    // the compose file mounts the dashboards directory here
    expect(provider.providers[0]?.options.path).toBe('/var/lib/grafana/dashboards')
    const compose = fs.readFileSync(path.join(TOOLKIT_DIR, 'deployment', 'monitoring', 'docker-compose.monitoring.yml'), 'utf8')
    expect(compose).toContain('./monitoring/grafana/dashboards:/var/lib/grafana/dashboards:ro')
  })

  it('the dashboard is a valid model whose panels query the provisioned datasource', () => {
    const uid = ds.datasources[0]?.uid
    const ids = board.panels.map((p) => p.id)
    expect(new Set(ids).size).toBe(ids.length)
    for (const p of board.panels) {
      expect(p.datasource.uid, p.title).toBe(uid)
      for (const t of p.targets) expect(t.datasource.uid, p.title).toBe(uid)
    }
  })

  it('covers stack health, backup ages, deploys, disk, PostgreSQL and Redis', () => {
    const exprs = board.panels.flatMap((p) => p.targets.map((t) => t.expr)).join('\n')
    for (const metric of ['toogoodtogo_service_healthy', 'toogoodtogo_backup_last_success_timestamp_seconds', 'toogoodtogo_offsite_last_success_timestamp_seconds', 'toogoodtogo_drill_last_timestamp_seconds', 'toogoodtogo_deploy_last_outcome', 'toogoodtogo_release_info', 'node_filesystem_avail_bytes', 'pg_up', 'redis_up']) {
      expect(exprs).toContain(metric)
    }
  })

  it('no two panels overlap on the grid', () => {
    const cells = new Set<string>()
    for (const p of board.panels) {
      for (let x = p.gridPos.x; x < p.gridPos.x + p.gridPos.w; x++) {
        for (let y = p.gridPos.y; y < p.gridPos.y + p.gridPos.h; y++) {
          const cell = `${x},${y}`
          expect(cells.has(cell), `${p.title} overlaps at ${cell}`).toBe(false)
          cells.add(cell)
        }
      }
    }
  })
})
