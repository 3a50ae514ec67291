import assert from 'node:assert/strict'
import { once } from 'node:events'
import { proxy, splice } from '../lib/index.js'
import { backends } from '../lib/index.js'
import { assertNoLeaks, digest, eachBackend, eventually, readExactly, receive, reset, rig, send, socketPair, steadyFds, stream } from './helpers.js'

const MiB = 1 << 20

eachBackend('endings', backend => {
  // Every kind of ending below gives back every descriptor and splice.
  let fdsBefore = 0
  before(async function () {
    if (backends().includes(backend)) fdsBefore = await steadyFds(backend)
  })
  after(async function () {
    if (backends().includes(backend)) await assertNoLeaks(fdsBefore)
  })

  it("EOF with end: true ends the drain after the last byte, the drain finishes, and the source emits end", async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const received = receive(receiver)
    const sp = splice(source, drain, { backend })
    const sourceEnded = once(source, 'end')
    const drainFinished = once(drain, 'finish')
    const sent = await send(sender, 'eof-end', 2 * MiB)
    assert.deepEqual(await sp.done, { bytes: 2 * MiB, reason: 'eof' })
    assert.deepEqual(await received, sent)
    await sourceEnded
    await drainFinished
    assert.equal(drain.writableEnded, true)
    destroy()
  })

  it('proxy(): ended by EOF both ways, both sockets close themselves, as with pipe()', async () => {
    const [client, a] = await socketPair()
    const [b, server] = await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true })
    const closed = [once(a, 'close'), once(b, 'close')]
    const proxied = proxy(a, b, { backend })
    const atServer = receive(server)
    const request = stream('close-request')(64 * 1024)
    client.end(request)
    assert.deepEqual(await atServer, digest(request))
    const atClient = receive(client)
    const response = await send(server, 'close-response', MiB)
    assert.deepEqual(await atClient, response)
    const { aToB, bToA } = await proxied
    assert.deepEqual([aToB.reason, bToA.reason], ['eof', 'eof'])
    await Promise.all(closed)
    for (const s of [client, server]) s.destroy()
  })

  it('EOF with end: false leaves the drain open for more writes', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const sp = splice(source, drain, { backend, end: false })
    const sent = stream('eof-open')(MiB)
    sender.end(sent)
    const result = await sp.done
    assert.deepEqual(result, { bytes: MiB, reason: 'eof' })
    assert.equal(drain.writableEnded, false)
    const received = receive(receiver)
    drain.end('after')
    assert.deepEqual(await received, digest(Buffer.concat([sent, Buffer.from('after')])))
    destroy()
  })

  it('proxy() carries a half-close across while the other direction keeps flowing', async () => {
    const [client, a] = await socketPair()
    const [b, server] = await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true })
    const proxied = proxy(a, b, { backend })
    // The client sends its request and half-closes.
    const request = stream('request')(256 * 1024)
    const atServer = receive(server)
    client.end(request)
    assert.deepEqual(await atServer, digest(request))
    // The server answers after seeing the EOF; the client still receives it all.
    const atClient = receive(client)
    const response = await send(server, 'response', 8 * MiB)
    assert.deepEqual(await atClient, response)
    const result = await proxied
    assert.deepEqual(result.aToB, { bytes: request.length, reason: 'eof' })
    assert.deepEqual(result.bToA, { bytes: 8 * MiB, reason: 'eof' })
    for (const s of [client, a, b, server]) s.destroy()
  })

  it("the drain's peer resets: reason error with EPIPE or ECONNRESET", async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const sp = splice(source, drain, { backend })
    let moved = 0
    receiver.on('data', (d: Buffer) => { moved += d.length })
    const sending = send(sender, 'reset', 256 * MiB).catch(() => undefined)
    await eventually(() => moved > MiB)
    reset(receiver)
    const result = await sp.done
    assert.equal(result.reason, 'error')
    assert.ok(['EPIPE', 'ECONNRESET'].includes((result.error as NodeJS.ErrnoException).code!),
      `code ${(result.error as NodeJS.ErrnoException).code}`)
    assert.ok(result.bytes >= moved)
    destroy()
    await sending
  })

  for (const which of ['source', 'drain'] as const) {
    it(`the ${which} destroyed mid-splice: reason close, and the other socket still works`, async () => {
      const { sender, source, drain, receiver, destroy } = await rig()
      const sp = splice(source, drain, { backend })
      let moved = 0
      receiver.on('data', (d: Buffer) => { moved += d.length })
      const sending = send(sender, 'destroy', 256 * MiB).catch(() => undefined)
      await eventually(() => moved > MiB)
      const gone = which === 'source' ? source : drain
      gone.destroy()
      const result = await sp.done
      assert.equal(result.reason, 'close')
      assert.ok(result.bytes >= moved)
      // The destroyed socket's connection really closes: its peer sees the end.
      const peer = which === 'source' ? sender : receiver
      await eventually(() => peer.destroyed || peer.readableEnded)
      assert.ok(peer.destroyed || peer.readableEnded, `the ${which}'s peer was not told`)
      // The survivor is an ordinary socket again.
      const survivor = which === 'source' ? drain : source
      const survivorPeer = which === 'source' ? receiver : sender
      if (which === 'source') {
        let tail = ''
        receiver.on('data', (d: Buffer) => { tail = (tail + d.toString('latin1')).slice(-10) })
        survivor.write('still here')
        assert.ok(await eventually(() => tail === 'still here'), 'the drain no longer writes')
      } else {
        // The source's rest is readable in JavaScript again.
        const more = await readExactly(survivor, 1000)
        assert.equal(more.length, 1000)
        assert.ok(survivorPeer.writable)
      }
      destroy()
      await sending
    })
  }
})
