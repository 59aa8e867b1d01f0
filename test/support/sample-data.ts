import type { Cluster } from './pg-cluster.ts'

// Data that tries to break a dump: newlines, tabs, backslashes, a value that is exactly `\.`,
// NULLs, unicode, a quoted mixed-case table name with a space, an empty table, and a sequence.
export async function seedSampleData(cluster: Cluster, database: string, users = 500): Promise<void> {
  await cluster.query(`
    CREATE TABLE users (id serial PRIMARY KEY, name text NOT NULL, bio text, created_at timestamptz DEFAULT now());
    CREATE TABLE businesses (id serial PRIMARY KEY, owner_id int REFERENCES users(id), title text, meta jsonb);
    CREATE TABLE "Audit Trail" (id bigserial PRIMARY KEY, note text);
    CREATE TABLE empty_table (x int);
    INSERT INTO users (name, bio)
      SELECT 'user ' || g, CASE g % 5 WHEN 0 THEN NULL WHEN 1 THEN E'line one\\nline two\\ttab' WHEN 2 THEN E'back\\\\slash' WHEN 3 THEN '\\.' ELSE 'héllo ✓ ' || md5(g::text) END
      FROM generate_series(1, ${users}) g;
    INSERT INTO businesses (owner_id, title, meta) SELECT g, 'biz ' || g, jsonb_build_object('n', g) FROM generate_series(1, ${Math.floor(users / 4)}) g;
    INSERT INTO "Audit Trail" (note) SELECT 'event ' || g FROM generate_series(1, 37) g;
  `, database)
}

/** One checksum per table, so a round trip can be compared table by table. */
export async function tableChecksums(cluster: Cluster, database: string): Promise<Record<string, string>> {
  const tables = await cluster.query<{ name: string }>(`SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS name FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`, database)
  const sums: Record<string, string> = {}
  for (const { name } of tables) {
    const [row] = await cluster.query<{ sum: string; n: string }>(`SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS sum, count(*)::text AS n FROM ${name} t`, database)
    sums[name] = `${row!.n}:${row!.sum}`
  }
  return sums
}
