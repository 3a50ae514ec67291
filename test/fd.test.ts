import assert from 'node:assert/strict'
import fs from 'node:fs'
import { getSplice, setSplice } from '../lib/index.js'
import { native } from '../lib/native.js'
import { digest, eventually, readExactly, rig, sleep, stream } from './helpers.js'

// The descriptor-level mirror of setsockopt/getsockopt(SO_SPLICE).
describe('setSplice / getSplice on descriptors', function () {
  before(function () { if (!native) this.skip() })

  function fd (socket: unknown): number {
    return (socket as { _handle: { fd: number } })._handle.fd
  }

  it('splices, counts, unsplices, and keeps the count after the end', async () => {
    const r = await rig()
    r.source.pause()
    ;(r.source as unknown as { _handle: { readStop (): void } })._handle.readStop()
    const data = stream('fd')(512 * 1024)
    setSplice(fd(r.source), fd(r.drain), { max: 100000 })
    r.sender.write(data)
    assert.deepEqual(digest(await readExactly(r.receiver, 100000)), digest(data.subarray(0, 100000)))
    assert.ok(await eventually(() => getSplice(fd(r.source)) === 100000))
    // The end reaches JavaScript on the next turn of the event loop.
    assert.ok(await eventually(() => native!.stats().splices === 0))
    await sleep(20)
    assert.equal(getSplice(fd(r.source)), 100000)
    assert.throws(() => setSplice(fd(r.source), -1), { code: 'ENOTCONN' })
    r.destroy()
  })

  it('unsplice with -1 ends an active splice', async () => {
    const r = await rig()
    r.source.pause()
    setSplice(fd(r.source), fd(r.drain))
    assert.throws(() => setSplice(fd(r.source), fd(r.receiver)), { code: 'EBUSY' })
    setSplice(fd(r.source), -1)
    assert.ok(await eventually(() => native!.stats().splices === 0))
    assert.equal(getSplice(fd(r.source)), 0)
    r.destroy()
  })

  it('rejects bad descriptors with EBADF and ENOTSOCK', () => {
    assert.throws(() => setSplice(-5, 1), { code: 'EBADF' })
    assert.throws(() => setSplice(99999, 98888), { code: 'EBADF' })
    const file = fs.openSync('/dev/null', 'r')
    try {
      assert.throws(() => setSplice(file, file), { code: 'ENOTSOCK' })
    } finally {
      fs.closeSync(file)
    }
    assert.throws(() => getSplice('3' as unknown as number), { code: 'ERR_INVALID_ARG_TYPE' })
  })
})
