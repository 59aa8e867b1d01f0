import type os from 'node:os'
import { describe, expect, it } from 'vitest'
import { swarmFirewallCommands, swarmRule } from '../../lib/commands/ufw.ts'
import { advertiseAddress, isAlreadyDone, swarmAction, swarmSettings, tokenProblem, type SwarmAction } from '../../lib/setup/swarm.ts'
import { formatStatus, needsAttention, type StatusReport } from '../../lib/status/report.ts'
import { clusterAttention, clusterRows, nodesHealth, parseLocalSwarm, parseNodes, parseServices, parseTasksNotRunning, type LocalSwarm } from '../../lib/swarm/cluster.ts'

// setup-droplet --swarm's decisions (lib/setup/swarm.ts) and the cluster's reading
// (lib/swarm/cluster.ts) as data; test/e2e/swarm-setup.test.ts runs them on real Docker engines.

const INIT: SwarmAction = { kind: 'init' }
const JOIN: SwarmAction = { kind: 'join', manager: '10.114.0.2' }

describe('--swarm', () => {
  it('init, join MANAGER (IP, :2377 allowed); anything else is a usage error', () => {
    expect(swarmAction(undefined, [])).toBeNull()
    expect(swarmAction('init', [])).toEqual(INIT)
    expect(swarmAction('join', ['10.114.0.2'])).toEqual(JOIN)
    expect(swarmAction('join', ['10.114.0.2:2377'])).toEqual(JOIN)
    expect(swarmAction('join', ['[fd00::2]:2377'])).toEqual({ kind: 'join', manager: 'fd00::2' })
    expect(() => swarmAction('join', [])).toThrow(/needs the manager's address/)
    expect(() => swarmAction('join', ['manager.example.com'])).toThrow(/expected the manager's IP address/)
    expect(() => swarmAction('join', ['10.114.0.2:2378'])).toThrow(/expected the manager's IP address/)
    expect(() => swarmAction('leave', [])).toThrow(/expected --swarm init or --swarm join MANAGER/)
    expect(() => swarmAction('init', ['10.0.0.1'])).toThrow(/takes no argument/)
    // without --swarm, setup-droplet takes no argument, as before
    expect(() => swarmAction(undefined, ['x'])).toThrow(/Unexpected argument: x/)
  })

  it('SWARM_PEERS: IP addresses only (no subnet, no 0.0.0.0); join adds the manager; duplicates once', () => {
    expect(swarmSettings({ SWARM_PEERS: '10.114.0.3, 10.114.0.4 10.114.0.3' }, JOIN).peers).toEqual(['10.114.0.2', '10.114.0.3', '10.114.0.4'])
    expect(swarmSettings({}, INIT).peers).toEqual([])
    expect(() => swarmSettings({ SWARM_PEERS: '10.114.0.0/20' }, INIT)).toThrow(/10\.114\.0\.0\/20 is not an IP address/)
    expect(() => swarmSettings({ SWARM_PEERS: '0.0.0.0' }, INIT)).toThrow(/not an IP address/)
    expect(() => swarmSettings({ SWARM_PEERS: 'any' }, INIT)).toThrow(/not an IP address/)
    expect(() => swarmSettings({ SWARM_ADVERTISE_ADDR: 'eth1' }, INIT)).toThrow(/SWARM_ADVERTISE_ADDR=eth1 is not an IP address/)
    expect(() => swarmSettings({ SSH_PORT: '0' }, INIT)).toThrow(/SSH_PORT/)
  })

  it('the join token: SWMTKN-1-… only (nothing else reaches dockerd)', () => {
    expect(tokenProblem(`SWMTKN-1-${'a1'.repeat(25)}-${'b2c'.repeat(8)}z`)).toBeNull()
    expect(tokenProblem('SWMTKN-1-abc-def')).toMatch(/not a Swarm join token/)
    expect(tokenProblem(`SWMTKN-1-${'a'.repeat(50)}-${'b'.repeat(25)}"; rm -rf /`)).toMatch(/not a Swarm join token/)
  })
})

describe('the advertise address', () => {
  const info = (address: string, netmask: string, internal = false): os.NetworkInterfaceInfo => ({ address, netmask, family: 'IPv4', mac: '00:00:00:00:00:00', internal, cidr: null })
  // A DigitalOcean droplet in a VPC: public eth0, private eth1, Docker's bridges.
  const droplet = {
    lo: [info('127.0.0.1', '255.0.0.0', true)],
    eth0: [info('203.0.113.10', '255.255.240.0')],
    eth1: [info('10.114.0.3', '255.255.240.0')],
    docker0: [info('172.17.0.1', '255.255.0.0')],
    docker_gwbridge: [info('172.18.0.1', '255.255.0.0')],
  }

  it("the address on the peers' subnet, never the public one", () => {
    expect(advertiseAddress(swarmSettings({ SWARM_PEERS: '10.114.0.2,10.114.0.3,10.114.0.4' }, INIT), droplet)).toBe('10.114.0.3')
    expect(advertiseAddress(swarmSettings({}, JOIN), droplet)).toBe('10.114.0.3')
  })

  it('SWARM_ADVERTISE_ADDR when given, if this droplet has it', () => {
    expect(advertiseAddress(swarmSettings({ SWARM_ADVERTISE_ADDR: '10.114.0.3' }, INIT), droplet)).toBe('10.114.0.3')
    expect(() => advertiseAddress(swarmSettings({ SWARM_ADVERTISE_ADDR: '10.114.0.9' }, INIT), droplet)).toThrow(/not an address of this droplet/)
    // Docker's own bridge is not an address the other droplets reach
    expect(() => advertiseAddress(swarmSettings({ SWARM_ADVERTISE_ADDR: '172.17.0.1' }, INIT), droplet)).toThrow(/not an address of this droplet/)
  })

  it('refused, asking for SWARM_ADVERTISE_ADDR, when it cannot be told', () => {
    expect(() => advertiseAddress(swarmSettings({}, INIT), droplet)).toThrow(/no other droplet is listed in SWARM_PEERS.*Set SWARM_ADVERTISE_ADDR/)
    expect(() => advertiseAddress(swarmSettings({ SWARM_PEERS: '192.168.5.5' }, INIT), droplet)).toThrow(/no address of this droplet is on the same subnet as 192\.168\.5\.5/)
    const twoPrivate = { ...droplet, eth2: [info('10.114.0.50', '255.255.240.0')] }
    expect(() => advertiseAddress(swarmSettings({}, JOIN), twoPrivate)).toThrow(/several addresses/)
  })
})

describe('already in a Swarm', () => {
  const local = (over: Partial<LocalSwarm>): LocalSwarm => ({ state: 'active', nodeAddr: '10.114.0.3', manager: false, managers: ['10.114.0.2:2377'], clusterId: null, error: '', ...over })

  it('not in one: the action runs', () => {
    expect(isAlreadyDone(INIT, local({ state: 'inactive', managers: [] }))).toBe(false)
    expect(isAlreadyDone(JOIN, local({ state: 'inactive', managers: [] }))).toBe(false)
  })

  it('already where the action would put it: left as it is', () => {
    expect(isAlreadyDone(INIT, local({ manager: true, clusterId: 'c1', managers: ['10.114.0.3:2377'] }))).toBe(true)
    expect(isAlreadyDone(JOIN, local({}))).toBe(true)
    expect(isAlreadyDone({ kind: 'join', manager: 'fd00::2' }, local({ managers: ['[fd00::2]:2377'] }))).toBe(true)
  })

  it('another Swarm, a worker asked to init, pending, locked: refused, nothing changed', () => {
    expect(() => isAlreadyDone(JOIN, local({ managers: ['10.9.9.9:2377'] }))).toThrow(/already in another Swarm \(managers: 10\.9\.9\.9:2377\).*docker swarm leave.*Nothing was changed/)
    expect(() => isAlreadyDone(INIT, local({}))).toThrow(/already a worker in a Swarm/)
    expect(() => isAlreadyDone(JOIN, local({ state: 'pending' }))).toThrow(/membership is pending/)
    expect(() => isAlreadyDone(JOIN, local({ state: 'error', error: 'certificate expired' }))).toThrow(/error \(certificate expired\)/)
    expect(() => isAlreadyDone(INIT, local({ state: 'locked' }))).toThrow(/docker swarm unlock/)
  })
})

describe('the firewall', () => {
  const argv = (added: string[], peers: string[]) => swarmFirewallCommands(added, peers).map((argv) => argv.join(' '))

  it('each Swarm port open to each peer, in ufw\'s words', () => {
    expect(argv([], ['10.114.0.2'])).toEqual([
      'ufw allow from 10.114.0.2 to any port 2377 proto tcp',
      'ufw allow from 10.114.0.2 to any port 7946 proto tcp',
      'ufw allow from 10.114.0.2 to any port 7946 proto udp',
      'ufw allow from 10.114.0.2 to any port 4789 proto udp',
    ])
  })

  it('a second run adds nothing', () => {
    const added = ['allow 22/tcp', ...['2377 proto tcp', '7946 proto tcp', '7946 proto udp', '4789 proto udp'].map((p) => `allow from 10.114.0.2 to any port ${p}`)]
    expect(argv(added, ['10.114.0.2'])).toEqual([])
  })

  it('a peer no longer listed, and any Swarm port open to anywhere, are closed; other rules are left alone', () => {
    const added = ['allow 22/tcp', 'allow 80/tcp', 'allow 2377/tcp', 'allow 4789', swarmRule('10.114.0.9', 7946, 'udp'), 'allow from 10.0.0.0/8 to any port 9100 proto tcp']
    expect(argv(added, [])).toEqual(['ufw delete allow 2377/tcp', 'ufw delete allow 4789', 'ufw delete allow from 10.114.0.9 to any port 7946 proto udp'])
  })
})

describe('the cluster, read on a manager', () => {
  it('docker info: this node\'s membership', () => {
    const inactive = parseLocalSwarm('{"NodeID":"","NodeAddr":"","LocalNodeState":"inactive","ControlAvailable":false,"Error":"","RemoteManagers":null}')
    expect(inactive).toMatchObject({ state: 'inactive', manager: false, managers: [], clusterId: null })
    const manager = parseLocalSwarm(JSON.stringify({ NodeID: 'abc', NodeAddr: '10.114.0.2', LocalNodeState: 'active', ControlAvailable: true, Error: '', RemoteManagers: [{ NodeID: 'abc', Addr: '10.114.0.2:2377' }], Nodes: 3, Managers: 1, Cluster: { ID: 'cid', Version: {} } }))
    expect(manager).toMatchObject({ state: 'active', manager: true, managers: ['10.114.0.2:2377'], clusterId: 'cid' })
    expect(() => parseLocalSwarm('{"LocalNodeState":1}')).toThrow()
  })

  const nodes = [
    '{"Availability":"Active","EngineVersion":"20.10.24","Hostname":"droplet-1","ID":"a","ManagerStatus":"Leader","Self":true,"Status":"Ready","TLSStatus":"Ready"}',
    '{"Availability":"Active","EngineVersion":"20.10.24","Hostname":"droplet-2","ID":"b","ManagerStatus":"","Self":false,"Status":"Ready","TLSStatus":"Ready"}',
    '{"Availability":"Drain","EngineVersion":"20.10.24","Hostname":"droplet-3\\u001b[2J","ID":"c","ManagerStatus":"","Self":false,"Status":"Down","TLSStatus":"Ready"}',
  ].join('\n')

  it('docker node ls: a down node names itself, a drained one is the operator\'s choice; a hostname cannot drive the terminal', () => {
    const parsed = parseNodes(nodes)
    expect(parsed.map((n) => n.hostname)).toEqual(['droplet-1', 'droplet-2', 'droplet-3?[2J'])
    expect(nodesHealth(parsed)).toMatchObject({ status: 'degraded', detail: 'node droplet-3?[2J is down; 2 of 3 ready' })
    expect(nodesHealth(parsed.slice(0, 2))).toMatchObject({ status: 'healthy', detail: '2 nodes ready' })
    const unreachable = parseNodes('{"Availability":"Active","Hostname":"m2","ManagerStatus":"Unreachable","Self":false,"Status":"Ready"}')
    expect(nodesHealth(unreachable)).toMatchObject({ status: 'degraded', detail: 'manager m2 is unreachable; 0 of 1 ready' })
    expect(() => parseNodes('not json')).toThrow(/unexpected node line/)
  })

  it('services and the tasks that do not run, with their error', () => {
    const services = parseServices([
      '{"ID":"s1","Image":"127.0.0.1:5000/ttg-bot:v1.2.0@sha256:0123abcd","Mode":"replicated","Name":"ttg_bot","Ports":"","Replicas":"2/3"}',
      '{"ID":"s2","Image":"nginx:1.22","Mode":"global","Name":"ttg_nginx","Ports":"*:443->443/tcp","Replicas":"3/3"}',
      '{"ID":"s3","Image":"redis:7","Mode":"replicated","Name":"ttg_redis","Ports":"","Replicas":"1/1 (max 1 per node)"}',
    ].join('\n'))
    expect(services).toEqual([
      { name: 'ttg_bot', mode: 'replicated', running: 2, desired: 3, image: '127.0.0.1:5000/ttg-bot:v1.2.0' },
      { name: 'ttg_nginx', mode: 'global', running: 3, desired: 3, image: 'nginx:1.22' },
      { name: 'ttg_redis', mode: 'replicated', running: 1, desired: 1, image: 'redis:7' },
    ])
    const tasks = parseTasksNotRunning([
      '{"CurrentState":"Running 5 minutes ago","DesiredState":"Running","Error":"","ID":"t1","Image":"x","Name":"ttg_bot.1","Node":"droplet-1","Ports":""}',
      '{"CurrentState":"Pending 1 minute ago","DesiredState":"Running","Error":"no suitable node (scheduling constraints not satisfied on 3 nodes)","ID":"t2","Image":"x","Name":"ttg_bot.3","Node":"","Ports":""}',
      '{"CurrentState":"Failed 2 minutes ago","DesiredState":"Shutdown","Error":"task: non-zero exit (1)","ID":"t3","Image":"x","Name":" \\\\_ ttg_bot.3","Node":"droplet-3","Ports":""}',
      '{"CurrentState":"Shutdown 1 hour ago","DesiredState":"Shutdown","Error":"","ID":"t4","Image":"x","Name":" \\\\_ ttg_bot.1","Node":"droplet-1","Ports":""}',
    ].join('\n'))
    expect(tasks).toEqual([
      { name: 'ttg_bot.3', node: '', desired_state: 'Running', current_state: 'Pending 1 minute ago', error: 'no suitable node (scheduling constraints not satisfied on 3 nodes)' },
      { name: 'ttg_bot.3', node: 'droplet-3', desired_state: 'Shutdown', current_state: 'Failed 2 minutes ago', error: 'task: non-zero exit (1)' },
    ])
    const cluster = { nodes: parseNodes(nodes), services, tasks_not_running: tasks }
    expect(clusterAttention(cluster)).toEqual(['node droplet-3?[2J is down', 'service ttg_bot 2/3 running'])
    expect(clusterRows(cluster)).toEqual([
      ['Nodes', 'droplet-1 (this host): ready, active, manager leader'],
      ['', 'droplet-2: ready, active, worker'],
      ['', 'droplet-3?[2J: down, drain, worker'],
      ['Services', 'ttg_bot: 2/3 running (replicated), 127.0.0.1:5000/ttg-bot:v1.2.0'],
      ['', 'ttg_nginx: 3/3 running (global), nginx:1.22'],
      ['', 'ttg_redis: 1/1 running (replicated), redis:7'],
      ['Tasks', 'ttg_bot.3 on no node: Pending 1 minute ago (no suitable node (scheduling constraints not satisfied on 3 nodes))'],
      ['', 'ttg_bot.3 on droplet-3: Failed 2 minutes ago (task: non-zero exit (1))'],
    ])
  })
})

describe('status on a Swarm manager', () => {
  const now = new Date('2026-12-07T08:00:00Z')
  const base: StatusReport = {
    generated_at: '2026-12-07T08:00:00Z', release: null, last_deploy: null, newest_backup: null, newest_offsite: null, offsite_configured: false,
    last_drill: null, wal_archived_at: null, base_backups: null, disks: [], docker_disk: null, health: null, alerts: null, unreadable: [],
  }
  const swarm = {
    nodes: parseNodes('{"Availability":"Active","Hostname":"droplet-1","ManagerStatus":"Leader","Self":true,"Status":"Ready"}\n{"Availability":"Active","Hostname":"droplet-2","ManagerStatus":"","Self":false,"Status":"Down"}'),
    services: parseServices('{"Image":"bot:v1","Mode":"replicated","Name":"ttg_bot","Replicas":"1/2"}'),
    tasks_not_running: [],
  }

  it('nodes, services and tasks after Health; what is wrong in Needs attention', () => {
    const screen = formatStatus({ ...base, swarm }, now)
    expect(screen).toContain(['Health       could not be checked', 'Nodes        droplet-1 (this host): ready, active, manager leader', '             droplet-2: down, active, worker', 'Services     ttg_bot: 1/2 running (replicated), bot:v1', 'Tasks        every task that should run is running', 'Alerts'].join('\n'))
    expect(needsAttention({ ...base, swarm }, now)).toEqual(expect.arrayContaining(['node droplet-2 is down', 'service ttg_bot 1/2 running']))
  })

  it('in compose mode (no swarm key) the screen has no Swarm rows and the JSON no swarm key', () => {
    expect(formatStatus(base, now)).not.toMatch(/^(Nodes|Services|Tasks) /m)
    expect(JSON.stringify(base)).not.toContain('swarm')
  })
})
