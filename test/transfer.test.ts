import assert from 'node:assert/strict'
import { once } from 'node:events'
import net from 'node:net'
import { proxy, splice } from '../lib/index.js'
import { digest, eachBackend, eventually, receive, rig, send, sleep, socketPair, stream } from './helpers.js'

const MiB = 1 << 20

eachBackend('moving bytes', backend => {
  it('moves 256 MiB one way, every byte in order', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const received = receive(receiver)
    const sp = splice(source, drain, { backend })
    assert.equal(sp.backend, backend)
    const sent = await send(sender, 'one-way', 256 * MiB)
    const result = await sp.done
    assert.deepEqual(result, { bytes: 256 * MiB, reason: 'eof' })
    assert.deepEqual(await received, sent)
    destroy()
  })

  it('moves 64 MiB both ways at once through proxy()', async () => {
    const [client, a] = await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true })
    const [b, server] = await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true })
    const proxied = proxy(a, b, { backend })
    const atServer = receive(server)
    const atClient = receive(client)
    const [up, down] = await Promise.all([send(client, 'up', 64 * MiB), send(server, 'down', 64 * MiB)])
    assert.deepEqual(await atServer, up)
    assert.deepEqual(await atClient, down)
    const result = await proxied
    assert.deepEqual(result.aToB, { bytes: 64 * MiB, reason: 'eof' })
    assert.deepEqual(result.bToA, { bytes: 64 * MiB, reason: 'eof' })
    for (const s of [client, a, b, server]) s.destroy()
  })

  it('delivers first what was written before the splice and what Node already buffered', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const next = stream('early')
    const buffered = next(8 * 1024) // below Node's high-water mark: Node reads it all
    const inKernel = next(256 * 1024) // Node stops reading at its high-water mark
    const queued = next(1000)
    const late = next(4 * MiB)
    sender.write(buffered)
    assert.ok(await eventually(() => source.readableLength === buffered.length))
    sender.write(inKernel)
    await sleep(50)
    // `queued` sits in the drain's write queue when the splice starts.
    drain.cork()
    drain.write(queued)
    const received = receive(receiver)
    const sp = splice(source, drain, { backend })
    drain.uncork()
    sender.end(late)
    const result = await sp.done
    assert.equal(result.reason, 'eof')
    assert.equal(result.bytes, buffered.length + inKernel.length + late.length)
    assert.deepEqual(await received, digest(Buffer.concat([queued, buffered, inKernel, late])))
    destroy()
  })

  it('splices an IPv6 connection into an IPv4 one', async () => {
    const { sender, source, drain, receiver, destroy } = await rig({ sourceHost: '::1', drainHost: '127.0.0.1' })
    assert.equal(source.remoteFamily, 'IPv6')
    assert.equal(drain.remoteFamily, 'IPv4')
    const received = receive(receiver)
    const sp = splice(source, drain, { backend })
    const sent = await send(sender, 'v6-to-v4', 8 * MiB)
    assert.deepEqual(await sp.done, { bytes: 8 * MiB, reason: 'eof' })
    assert.deepEqual(await received, sent)
    destroy()
  })

  it('waits for a connecting drain before moving bytes', async () => {
    const [sender, source] = await socketPair()
    const server = net.createServer().listen(0, '127.0.0.1')
    await once(server, 'listening')
    const accepted = once(server, 'connection')
    const drain = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
    assert.equal(drain.connecting, true)
    const sp = splice(source, drain, { backend })
    const [receiver] = await accepted as [net.Socket]
    const received = receive(receiver)
    const sent = await send(sender, 'connecting', MiB)
    assert.deepEqual(await sp.done, { bytes: MiB, reason: 'eof' })
    assert.deepEqual(await received, sent)
    for (const s of [sender, source, drain, receiver]) s.destroy()
    server.close()
  })
})
