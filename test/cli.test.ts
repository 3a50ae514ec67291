import assert from 'node:assert/strict'
import { readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { compilePeer } from '../lib/cli/bench-peer.js'
import { backends } from '../lib/index.js'
import { runCli } from './helpers.js'


describe('sosplice (command line)', () => {
  it('--help prints the commands and exits 0; no command exits 2', async () => {
    const help = await runCli('--help')
    assert.equal(help.code, 0)
    assert.match(help.stdout, /Commands:\n  bench .*\n  proxy /)
    const none = await runCli()
    assert.equal(none.code, 2)
    assert.match(none.stderr, /no command given/)
  })

  for (const command of ['bench', 'proxy']) {
    it(`${command} --help prints its usage and exits 0`, async () => {
      const { code, stdout } = await runCli(command, '--help')
      assert.equal(code, 0)
      assert.match(stdout, new RegExp(`^Usage: sosplice ${command} `))
    })
  }

  for (const [args, message] of [
    [['bnech'], /unknown command: bnech/],
    [['bench', '--runs', '0'], /--runs must be a whole number >= 1, not 0/],
    [['bench', '--size', 'lots'], /--size: not a size: lots/],
    [['bench', '--size', '0'], /--size must be at least 1 byte/],
    [['bench', '--connections', '1,x'], /--connections must be a whole number >= 1, not x/],
    [['bench', '--duration=-1'], /--duration must be a number of seconds/],
    [['bench', '--backends', 'pipe,warp'], /--backends: warp is not one of/],
    [['bench', '--udp', '--backends', 'node-pipe'], /--backends: node-pipe is not one of/],
    [['bench', '--udp', '--sizes', '64,70000'], /--sizes must be at most 65507, not 70000/],
    [['bench', '--udp', '--duration', '0'], /--duration must be more than 0 with --udp/],
    [['bench', '--frobnicate'], /Unknown option '--frobnicate'/],
    [['bench', 'extra'], /Unexpected argument 'extra'/]
  ] as const) {
    it(`rejects ${args.join(' ')} with exit code 2 and a message`, async () => {
      const { code, stdout, stderr } = await runCli(...args)
      assert.equal(code, 2)
      assert.equal(stdout, '')
      assert.match(stderr, message)
    })
  }

  it('bench --json: one document with positive figures for every case, workload (Node and C peers) and concurrency', async () => {
    const { code, stdout, stderr } = await runCli('bench', '--json', '--size', '8M', '--runs', '2',
      '--connections', '1,4', '--duration', '0.3')
    assert.equal(code, 0)
    const doc = JSON.parse(stdout)
    assert.equal(doc.size, 8 << 20)
    assert.deepEqual(doc.connections, [1, 4])
    // The C peers are there wherever a C compiler is; without one the bench says it left them out.
    const { peer } = compilePeer()
    if (!peer) assert.match(stderr, /C peers left out/)
    for (const workload of peer ? ['bulk', 'short', 'bulkC', 'shortC'] : ['bulk', 'short']) {
      const cases = doc[workload].map((r: { name: string, connections: number }) => `${r.name}/${r.connections}`)
      for (const name of ['default', 'userspace', 'node-pipe', 'direct', ...backends()]) {
        for (const c of [1, 4]) assert.ok(cases.includes(`${name}/${c}`), `${workload}: ${name}/${c} missing`)
      }
    }
    for (const r of [...doc.bulk, ...doc.bulkC]) {
      assert.equal(r.runs.length, 2)
      const { gbits, userPerGB, sysPerGB } = r.stats
      assert.ok(gbits.median > 0 && gbits.min <= gbits.median && gbits.median <= gbits.max, r.name)
      if (r.name !== 'direct') assert.ok(userPerGB.median + sysPerGB.median > 0, `${r.name} used no CPU`)
    }
    for (const r of [...doc.short, ...doc.shortC]) {
      const { perSecond, p50, p99, userPerConnection, sysPerConnection } = r.stats
      assert.ok(perSecond.median > 0 && p50.median > 0 && p99.median >= p50.median, r.name)
      if (r.name !== 'direct') assert.ok(userPerConnection.median + sysPerConnection.median > 0, `${r.name} used no CPU`)
      for (const run of r.runs) assert.deepEqual(run.errors, {}, `${r.name}: connections failed`)
    }
  })

  it('bench --udp --json: every case at every size, with datagrams/s, relay CPU and loss', async function () {
    if (!compilePeer().peer) this.skip() // no C compiler: it exits 1 and says so
    const { code, stdout } = await runCli('bench', '--udp', '--json', '--sizes', '64,1400', '--duration', '0.3',
      '--runs', '1', '--rate', '20000')
    assert.equal(code, 0)
    const doc = JSON.parse(stdout)
    const cases = doc.udp.map((r: { name: string, size: number }) => `${r.name}/${r.size}`)
    for (const name of [...backends().filter(b => b === 'pipe'), 'userspace', 'node-relay', 'direct']) {
      for (const size of [64, 1400]) assert.ok(cases.includes(`${name}/${size}`), `${name}/${size} missing`)
    }
    for (const r of doc.udp) {
      const { perSecond, gbits, cpuPerMillion, loss } = r.stats
      assert.ok(perSecond.median > 0 && gbits.median > 0, `${r.name}: nothing arrived`)
      assert.ok(loss.median >= 0 && loss.median < 1, `${r.name}: loss ${loss.median}`)
      if (r.name !== 'direct') assert.ok(cpuPerMillion.median > 0, `${r.name} used no CPU`)
    }
  })

  it('bench --svg writes a chart with a bar for every case', async () => {
    const file = path.join(os.tmpdir(), `sosplice-bench-${process.pid}.svg`)
    try {
      const { code } = await runCli('bench', '--size', '4M', '--runs', '1', '--duration', '0', '--connections', '1',
        '--backends', 'userspace,direct', '--svg', file)
      assert.equal(code, 0)
      const svg = readFileSync(file, 'utf8')
      assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/)
      assert.match(svg, />userspace<\/text>/)
      assert.match(svg, />direct<\/text>/)
    } finally {
      rmSync(file, { force: true })
    }
  })
})
