import assert from 'node:assert/strict'
import { splice } from '../lib/index.js'
import { digest, eachBackend, eventually, readExactly, rig, send, sleep, stream } from './helpers.js'

const MiB = 1 << 20

eachBackend('limits', backend => {
  it('max: exactly max bytes reach the drain, the rest stays readable from the source', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const max = 3 * MiB + 12345
    const total = 5 * MiB
    const sp = splice(source, drain, { backend, max })
    const sent = stream('max')(total)
    sender.write(sent)
    const result = await sp.done
    assert.deepEqual(result, { bytes: max, reason: 'max' })
    assert.deepEqual(digest(await readExactly(receiver, max)), digest(sent.subarray(0, max)))
    assert.deepEqual(digest(await readExactly(source, total - max)), digest(sent.subarray(max)))
    // Nothing past max reached the receiver.
    await sleep(50)
    assert.equal(receiver.readableLength, 0)
    destroy()
  })

  it('max smaller than what is already queued in the source', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const sent = stream('max-queued')(200 * 1024)
    sender.write(sent)
    // Everything is in the source (Node's buffer and the kernel's) before the splice.
    await eventually(() => source.readableLength > 0)
    await sleep(50)
    const max = 1000
    const result = await splice(source, drain, { backend, max }).done
    assert.deepEqual(result, { bytes: max, reason: 'max' })
    assert.deepEqual(digest(await readExactly(receiver, max)), digest(sent.subarray(0, max)))
    assert.deepEqual(digest(await readExactly(source, sent.length - max)), digest(sent.subarray(max)))
    destroy()
  })

  it('idle: a quiet source ends with idle after about the given time, and the sockets work again', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const next = stream('idle')
    const first = next(64 * 1024)
    const started = Date.now()
    const sp = splice(source, drain, { backend, idle: 300 })
    sender.write(first)
    const result = await sp.done
    const took = Date.now() - started
    assert.deepEqual(result, { bytes: first.length, reason: 'idle' })
    // Bounds, not timing: an idle that comes early or a second late is wrong.
    assert.ok(took >= 290 && took <= 1300, `ended after ${took} ms`)
    assert.deepEqual(digest(await readExactly(receiver, first.length)), digest(first))
    // Both sockets are ordinary streams again, both ways.
    const after = next(1000)
    sender.write(after)
    assert.deepEqual(await readExactly(source, after.length), after)
    drain.write(after)
    assert.deepEqual(await readExactly(receiver, after.length), after)
    receiver.write(after)
    assert.deepEqual(await readExactly(drain, after.length), after)
    destroy()
  })

  it('idle is inactivity, not a lifetime: a byte every 100 ms keeps an idle: 300 splice going for 2 s', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const sp = splice(source, drain, { backend, idle: 300 })
    let ended = false
    sp.done.then(() => { ended = true })
    const trickle = stream('trickle')(20)
    for (let i = 0; i < trickle.length; i++) {
      sender.write(trickle.subarray(i, i + 1))
      await sleep(100)
      assert.equal(ended, false, `ended after ${i + 1} bytes, ${(i + 1) * 100} ms`)
    }
    const quiet = Date.now()
    assert.deepEqual(await sp.done, { bytes: trickle.length, reason: 'idle' })
    const took = Date.now() - quiet
    assert.ok(took <= 1300, `idle came ${took} ms after the last byte`)
    assert.deepEqual(await readExactly(receiver, trickle.length), trickle)
    destroy()
  })

  it('unsplice() in the middle of a transfer loses and duplicates nothing', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const total = 64 * MiB
    let moved = 0
    receiver.on('data', (d: Buffer) => { moved += d.length })
    const received = new Promise<Buffer[]>(resolve => {
      const chunks: Buffer[] = []
      receiver.on('data', (d: Buffer) => chunks.push(d))
      receiver.on('end', () => resolve(chunks))
    })
    const sp = splice(source, drain, { backend, end: false })
    const sending = send(sender, 'unsplice', total)
    await eventually(() => moved > 8 * MiB)
    sp.unsplice()
    const result = await sp.done
    assert.equal(result.reason, 'unsplice')
    assert.ok(result.bytes > 0 && result.bytes < total, `moved ${result.bytes}`)
    // JavaScript forwards the rest itself.
    source.pipe(drain)
    const sent = await sending
    const got = Buffer.concat(await received)
    assert.deepEqual(digest(got), sent)
    destroy()
  })
})
