import assert from 'node:assert/strict'
import fs from 'node:fs'
import { fdOf } from '../lib/handover.js'
import { Flag, native, type NativeHandle, Reason } from '../lib/native.js'
import { rig } from './helpers.js'

// Descriptor numbers as the addon itself takes them, below lib/'s checks.
describe('descriptors at the addon', function () {
  before(function () { if (!native) this.skip() })

  it('start(): a number no descriptor can have is EBADF, never the descriptor it would wrap to', async () => {
    const r = await rig()
    const source = fdOf(r.source)
    const drain = fdOf(r.drain)
    const bad = [2 ** 32 + source, 2 ** 31 + source, Number.MAX_SAFE_INTEGER, Infinity, NaN, source + 0.5, -1]
    const started: NativeHandle[] = []
    try {
      for (const n of bad) {
        for (const [s, d] of [[n, drain], [source, n]]) {
          assert.throws(() => started.push(native!.start(s, d, 0, 0, 0, Flag.Flow0 | Flag.Residual, () => {})),
            { code: 'EBADF', syscall: 'splice' }, `start(${s}, ${d})`)
        }
      }
    } finally {
      for (const h of started) native!.stop(h, Reason.Close)
      r.destroy()
    }
  })

  it('identity(): equal for one socket, different for two, EBADF when closed, ENOTSOCK for a file', async () => {
    const r = await rig()
    try {
      const source = native!.identity(fdOf(r.source))
      assert.match(source, /^\d+:\d+$/)
      assert.equal(native!.identity(fdOf(r.source)), source)
      // The two ends of one connection are two sockets.
      assert.notEqual(native!.identity(fdOf(r.sender)), source)
      assert.notEqual(native!.identity(fdOf(r.drain)), source)
      assert.throws(() => native!.identity(2 ** 32 + fdOf(r.source)), { code: 'EBADF' })
    } finally {
      r.destroy()
    }
    const file = fs.openSync('/dev/null', 'r')
    try {
      assert.throws(() => native!.identity(file), { code: 'ENOTSOCK', errno: -88 })
    } finally {
      fs.closeSync(file)
    }
    assert.throws(() => native!.identity(file), { code: 'EBADF', syscall: 'fstat' })
  })
})
