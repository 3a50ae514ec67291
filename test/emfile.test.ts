import assert from 'node:assert/strict'
import { backends } from '../lib/index.js'
import { hasTool, report, script, start } from './child.js'

// Workers start at the first kernel splice, which may come when descriptors
// are nearly all taken (a proxy under a low `ulimit -n`).
describe('descriptors running short at the first kernel splice [pipe]', function () {
  before(function () {
    if (!backends().includes('pipe')) this.skip()
    if (!hasTool('prlimit')) {
      console.log('      (skipped: no prlimit to lower the descriptor limit)')
      this.skip()
    }
  })

  it('EMFILE is thrown or ends the splice, never an abort, and the engine starts once there are descriptors', async () => {
    // Node raises its soft limit to the hard one: lower both.
    const ran = await start(['prlimit', '--nofile=256:256', 'node', script('emfile-child')]).done
    assert.equal(ran.code, 0, `the child exited with ${ran.code}: ${ran.stderr}`)
    const { outcomes, last, held } = report<{ outcomes: { free: number, outcome: string, workers: number }[], last: string, held: string }>(ran)
    for (const { free, outcome } of outcomes) {
      assert.ok(['thrown', 'ended', 'moved'].includes(outcome), `${free} free: ${outcome}`)
    }
    // Otherwise the run proved little: starting the workers failed, then succeeded.
    assert.ok(outcomes.some(o => o.outcome === 'thrown' && o.free >= 2), JSON.stringify(outcomes))
    assert.equal(last, 'moved')
    // Refused with Node's bytes in hand: they are still the source's.
    assert.equal(held, 'given back')
  })
})
