import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ownershipSql, roleSql } from '../../lib/db/app-role.ts'
import { startCluster, type Cluster } from '../support/pg-cluster.ts'

// The SQL of lib/db/app-role.ts on a real server: the role it makes logs in with its password
// (the SCRAM verifier computed here), is no superuser, and owns every object of the database,
// whatever kind, after a superuser made them (as a restore of an ownerless dump does).
let cluster: Cluster
const role = { user: 'bot', password: 'B0tPassw0rdFromUrl' }
const asBot = `bot:${role.password}`

beforeAll(async () => {
  cluster = await startCluster()
  await cluster.query('CREATE DATABASE app')
  await cluster.query(`
    CREATE SCHEMA reports;
    CREATE TYPE mood AS ENUM ('ok', 'sad');
    CREATE DOMAIN cents AS integer CHECK (VALUE >= 0);
    CREATE TYPE pair AS (a int, b int);
    CREATE TABLE users (id serial PRIMARY KEY, name text, m mood, price cents);
    CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_id int REFERENCES users(id));
    CREATE SEQUENCE invoice_numbers;
    CREATE VIEW user_names AS SELECT name FROM users;
    CREATE MATERIALIZED VIEW user_count AS SELECT count(*) FROM users;
    CREATE TABLE reports.daily (day date PRIMARY KEY);
    CREATE FUNCTION touch() RETURNS int LANGUAGE sql AS 'SELECT 1';
    CREATE EXTENSION IF NOT EXISTS plpgsql;
    INSERT INTO users (name) VALUES ('alice');`, 'app')
})
afterAll(() => cluster?.stop())

describe('the bot database role', () => {
  it('is created with the password of DATABASE_URL, and is no superuser', async () => {
    await cluster.query(roleSql(role))
    await cluster.query(roleSql(role)) // idempotent
    expect(await cluster.query('SELECT current_user AS who', 'postgres', asBot)).toEqual([{ who: 'bot' }])
    expect(await cluster.query(`SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = 'bot'`)).toEqual([{ rolsuper: false, rolcreatedb: false, rolcreaterole: false }])
    expect(roleSql(role)).not.toContain(role.password)
  })

  it('owns the database and every object in it once handed over, and writes to it', async () => {
    await cluster.query(ownershipSql('bot'), 'app')
    await cluster.query(ownershipSql('bot'), 'app') // idempotent
    const notMine = await cluster.query(`
      SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname IN ('public', 'reports') AND pg_get_userbyid(c.relowner) <> 'bot'
      UNION ALL SELECT typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = 'public' AND pg_get_userbyid(t.typowner) <> 'bot'
      UNION ALL SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> 'bot'
      UNION ALL SELECT nspname FROM pg_namespace WHERE nspname = 'reports' AND pg_get_userbyid(nspowner) <> 'bot'
      UNION ALL SELECT datname FROM pg_database WHERE datname = 'app' AND pg_get_userbyid(datdba) <> 'bot'`, 'app')
    expect(notMine).toEqual([])
    await cluster.query(`INSERT INTO users (name, m, price) VALUES ('bob', 'ok', 5); INSERT INTO items (user_id) VALUES (1); SELECT nextval('invoice_numbers'); REFRESH MATERIALIZED VIEW user_count; CREATE TABLE later (x int); DROP TABLE later`, 'app', asBot)
    expect(await cluster.query('SELECT count(*)::int AS n FROM users', 'app', asBot)).toEqual([{ n: 2 }])
  })

  it('cannot run a program on the server', async () => {
    await expect(cluster.query(`COPY (SELECT 1) TO PROGRAM 'true'`, 'app', asBot)).rejects.toThrow(/permission denied|superuser|pg_execute_server_program/)
    await expect(cluster.query(`CREATE TEMP TABLE t (x text); COPY t FROM PROGRAM 'id'`, 'app', asBot)).rejects.toThrow(/permission denied|superuser|pg_execute_server_program/)
  })
})
