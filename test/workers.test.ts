import assert from 'node:assert/strict'
import { once } from 'node:events'
import { Worker } from 'node:worker_threads'
import { backends } from '../lib/index.js'
import { script } from './child.js'
import { assertNoLeaks, steadyFds } from './helpers.js'

// A worker thread has its own instance of the addon and its own engine, torn
// down with the thread: every descriptor the engine held must close with it.
describe('a worker thread that ends while its splices run [pipe]', function () {
  let fdsBefore = 0
  before(async function () {
    if (!backends().includes('pipe')) this.skip()
    fdsBefore = await steadyFds('pipe')
  })

  for (const mode of ['started', 'exit', 'terminate'] as const) {
    const how = {
      started: 'calls process.exit() with 20 splices started, none run yet',
      exit: 'calls process.exit() with 20 splices moving bytes and 20 just handed over',
      terminate: 'is terminated with 20 splices moving bytes'
    }[mode]
    it(`${how}: no descriptor is left open`, async () => {
      const worker = new Worker(script('worker-splices'), { workerData: mode })
      const exited = once(worker, 'exit')
      if (mode === 'terminate') {
        assert.equal((await once(worker, 'message'))[0], 'flowing')
        await worker.terminate()
      }
      const [code] = await exited
      assert.equal(code, mode === 'terminate' ? 1 : 0)
      await assertNoLeaks(fdsBefore)
    })
  }
})
