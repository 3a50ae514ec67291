import assert from 'node:assert/strict'
import type net from 'node:net'
import { backends } from '../lib/index.js'
import { Reason } from '../lib/native.js'
import { report, script, start } from './child.js'
import { digest, eventually, rig, stream } from './helpers.js'

const FIRST = 256 * 1024
const SECOND = 64 * 1024

interface Report {
  failed?: string
  before: boolean[]
  idle: { bytes: number, reason: Reason }
  others: number
  othersWhileIdle: boolean
  unsplice: { bytes: number, reason: Reason }
  after: boolean[]
}

/** Stops Node reading `socket`: once shared with a child it is blocking, and a read would block Node. */
function stopReading (socket: net.Socket) {
  socket.pause()
  ;(socket as unknown as { _handle: { readStop (): void } })._handle.readStop()
}

// Descriptors handed to the descriptor API may be blocking, and splice(2)
// then blocks in a TCP socket whatever SPLICE_F_NONBLOCK says (that flag is
// for the pipe): the worker thread would hang in the call.
describe('blocking sockets [pipe]', function () {
  before(function () { if (!backends().includes('pipe')) this.skip() })

  it('are spliced non-blocking: every byte, idle and unsplice end it, other splices move meanwhile, and they are blocking again after', async () => {
    const r = await rig()
    stopReading(r.source)
    stopReading(r.drain)
    const { child, done } = start(['node', script('blocking-child')], { stdio: [r.source, r.drain, 'pipe'], ms: 30000 })
    // The child has its own descriptors for them now.
    r.source.destroy()
    r.drain.destroy()
    const next = stream('blocking')
    r.sender.write(next(FIRST))
    // The second part only once asked for, after the idle end.
    child.stderr!.on('data', (d: string) => { if (d.includes('more')) r.sender.write(next(SECOND)) })
    const chunks: Buffer[] = []
    r.receiver.on('data', (d: Buffer) => chunks.push(d))
    const ran = await done
    await eventually(() => r.receiver.bytesRead >= FIRST + SECOND, 1000)
    r.destroy()
    const result = report<Report>(ran, ran.stderr)
    assert.equal(result.failed, undefined, result.failed)
    assert.deepEqual(result.before, [true, true], 'the premise: libuv gave the child blocking sockets')
    assert.deepEqual(result.idle, { bytes: FIRST, reason: Reason.Idle })
    assert.equal(result.others, 4)
    assert.ok(result.othersWhileIdle, 'the idle end came before the other splices had finished')
    assert.deepEqual(result.unsplice, { bytes: SECOND, reason: Reason.Unsplice })
    assert.deepEqual(result.after, [true, true], 'the sockets were left non-blocking')
    assert.equal(ran.code, 0)
    assert.deepEqual(digest(Buffer.concat(chunks)), digest(stream('blocking')(FIRST + SECOND)))
  })
})
