import assert from 'node:assert/strict'
import fs from 'node:fs'
import { backends } from '../lib/index.js'
import type { NativeStats } from '../lib/native.js'
import { hasTool, report, script, start } from './child.js'

const COUNT = 1000

interface Report {
  uid: number
  count: number
  bytes: number
  held: NativeStats
  end: NativeStats
}

/** The hard limit on open files, which Node raises its soft limit to. */
function fileLimit (): number {
  const line = fs.readFileSync('/proc/self/limits', 'utf8').split('\n').find(l => l.startsWith('Max open files'))!
  const hard = line.split(/\s{2,}/)[2]
  return hard === 'unlimited' ? Infinity : Number(hard)
}

// The kernel holds an unprivileged user's pipes to fs.pipe-user-pages-soft:
// past it, it refuses to grow a pipe and makes new ones 8 KiB. Root is
// exempt, so the test runs its splices as nobody.
describe('pipes within the per-user limit [pipe]', function () {
  before(function () {
    if (!backends().includes('pipe')) this.skip()
    const why = process.getuid!() !== 0
      ? 'not root, so it cannot run a child as nobody'
      : !hasTool('setpriv')
          ? 'no setpriv to run a child as nobody'
          : fileLimit() < 9 * COUNT ? `the open files limit (${fileLimit()}) is below ${9 * COUNT}` : ''
    if (why) {
      console.log(`      (skipped: ${why})`)
      this.skip()
    }
  })

  it(`${COUNT} concurrent splices as nobody, each holding a pipe: every byte, no resize refused, no pipe undersized`, async function () {
    this.timeout(180000)
    const ran = await start(['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups',
      'node', script('pipes-child'), String(COUNT)], { ms: 150000 }).done
    assert.equal(ran.code, 0, `the child exited with ${ran.code}: ${ran.stderr}`)
    const r = report<Report>(ran)
    assert.notEqual(r.uid, 0, 'the premise: the child is not root')
    // The premise: every splice held a pipe at once, which the kernel's limit cannot give at full size.
    assert.equal(r.held.relays, COUNT)
    assert.equal(r.held.pipes, COUNT)
    for (const stats of [r.held, r.end]) {
      assert.equal(stats.pipeResizesRefused, 0, JSON.stringify(stats))
      assert.equal(stats.pipesUndersized, 0, JSON.stringify(stats))
      // Within the kernel's limit for the user (twice the budget), with room to spare.
      assert.ok(stats.pipeBytes <= 2 * stats.pipeBudget, JSON.stringify(stats))
    }
    assert.equal(r.end.relays, 0)
    assert.equal(r.end.descriptors, 2 * r.end.workers + 2 * r.end.pooledPipes)
    console.log(`      ${JSON.stringify(r)}`)
  })
})
