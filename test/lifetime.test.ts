import assert from 'node:assert/strict'
import { eachBackend, runScript } from './helpers.js'

// Runs a child that splices `count` live connections, then `ending` for
// each; resolves with its exit code (null: killed by a signal) and how long
// it took.
async function child (backend: string, ending: string, count = 1): Promise<{ code: number | null, ms: number }> {
  const started = Date.now()
  const { code } = await runScript(`
    Promise.all(Array.from({ length: ${count} }, () => rig())).then(rigs => rigs.map(({ sender, source, drain, receiver }) => {
      for (const s of [sender, source, drain, receiver]) s.unref()
      const sp = splice(source, drain, { backend: ${JSON.stringify(backend)} })
      sender.write(Buffer.alloc(100000))
      ${ending}
    }))`)
  return { code, ms: Date.now() - started }
}

eachBackend('process lifetime', backend => {
  it('an active splice keeps the process alive', async () => {
    const { code, ms } = await child(backend, 'setTimeout(() => process.exit(7), 1000).unref()')
    assert.equal(code, 7, `exited with ${code} after ${ms} ms`)
  })

  it('unref() lets the process exit', async () => {
    const { code, ms } = await child(backend, 'sp.unref()')
    assert.equal(code, 0)
    assert.ok(ms < 5000, `took ${ms} ms`)
  })

  it('unref(): exiting with 50 live splices whose ends arrive as the process tears down does not crash', async () => {
    for (let round = 0; round < 5; round++) {
      const { code, ms } = await child(backend, 'sp.unref()', 50)
      assert.equal(code, 0, `round ${round}: exited with ${code} after ${ms} ms`)
    }
  })

  it('process.exit() with a live splice neither hangs nor crashes', async () => {
    const { code } = await child(backend, 'setTimeout(() => process.exit(3), 100).unref()')
    assert.equal(code, 3)
  })
})
