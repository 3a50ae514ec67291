import assert from 'node:assert/strict'
import { proxy, splice } from '../lib/index.js'
import { digest, eachBackend, eventually, readExactly, receive, rig, send, socketPair, stream } from './helpers.js'

const MiB = 1 << 20

eachBackend('controlling a running splice or proxy', backend => {
  it('unsplice() resolves with the result, as done does; what it did not move is still in the source', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const sp = splice(source, drain, { backend })
    const sent = stream('unsplice-promise')(4 * MiB)
    sender.write(sent)
    const received: Buffer[] = []
    receiver.on('data', (d: Buffer) => received.push(d))
    await eventually(() => sp.bytes >= MiB)
    const result = await sp.unsplice()
    assert.equal(result.reason, 'unsplice')
    assert.deepEqual(await sp.done, result)
    const rest = await readExactly(source, sent.length - result.bytes)
    await eventually(() => received.reduce((n, d) => n + d.length, 0) === result.bytes)
    assert.deepEqual(digest(Buffer.concat([...received, rest])), digest(sent))
    destroy()
  })

  it('unsplice() after the end resolves with the end that came first', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const sp = splice(source, drain, { backend })
    const received = receive(receiver)
    const sent = await send(sender, 'unsplice-late', MiB)
    assert.deepEqual(await sp.done, { bytes: MiB, reason: 'eof' })
    assert.deepEqual(await sp.unsplice(), { bytes: MiB, reason: 'eof' })
    assert.deepEqual(await received, sent)
    destroy()
  })

  it('an AbortSignal ends a splice as unsplice() does, and nothing is lost', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const controller = new AbortController()
    const sp = splice(source, drain, { backend, signal: controller.signal })
    const sent = stream('signal')(4 * MiB)
    sender.write(sent)
    const received: Buffer[] = []
    receiver.on('data', (d: Buffer) => received.push(d))
    await eventually(() => sp.bytes >= MiB)
    controller.abort()
    const result = await sp.done
    assert.equal(result.reason, 'unsplice')
    const rest = await readExactly(source, sent.length - result.bytes)
    await eventually(() => received.reduce((n, d) => n + d.length, 0) === result.bytes)
    assert.deepEqual(digest(Buffer.concat([...received, rest])), digest(sent))
    destroy()
  })

  it('a signal already aborted ends the splice at once, having moved nothing', async () => {
    const { sender, source, drain, destroy } = await rig()
    sender.write('waiting')
    const sp = splice(source, drain, { backend, signal: AbortSignal.abort() })
    assert.deepEqual(await sp.done, { bytes: 0, reason: 'unsplice' })
    assert.equal((await readExactly(source, 7)).toString(), 'waiting')
    destroy()
  })

  it('an AbortSignal ends both directions of a proxy', async () => {
    const [client, a] = await socketPair()
    const [b, server] = await socketPair()
    const controller = new AbortController()
    const proxied = proxy(a, b, { backend, signal: controller.signal })
    client.write('hello')
    assert.equal((await readExactly(server, 5)).toString(), 'hello')
    controller.abort()
    assert.deepEqual(await proxied, { aToB: { bytes: 5, reason: 'unsplice' }, bToA: { bytes: 0, reason: 'unsplice' } })
    assert.equal(a.allowHalfOpen, false)
    for (const s of [client, a, b, server]) s.destroy()
  })

  it('a proxy gives live per-direction counts while it runs, the final ones after', async () => {
    const [client, a] = await socketPair()
    const [b, server] = await socketPair()
    const proxied = proxy(a, b, { backend })
    assert.deepEqual(proxied.bytes, { aToB: 0, bToA: 0 })
    const up = stream('live-up')(3 * MiB)
    const down = stream('live-down')(MiB)
    client.write(up)
    server.write(down)
    const atServer = readExactly(server, up.length)
    const atClient = readExactly(client, down.length)
    assert.deepEqual(digest(await atServer), digest(up))
    assert.deepEqual(digest(await atClient), digest(down))
    await eventually(() => proxied.bytes.aToB === up.length && proxied.bytes.bToA === down.length)
    client.end()
    server.end()
    const result = await proxied
    assert.deepEqual(proxied.bytes, { aToB: result.aToB.bytes, bToA: result.bToA.bytes })
    assert.deepEqual(result.aToB, { bytes: up.length, reason: 'eof' })
    for (const s of [client, a, b, server]) s.destroy()
  })

  it('a signal that is not an AbortSignal is refused at once', async () => {
    const { source, drain, destroy } = await rig()
    assert.throws(() => splice(source, drain, { backend, signal: {} as AbortSignal }), { code: 'ERR_INVALID_ARG_TYPE' })
    assert.throws(() => proxy(source, drain, { backend, signal: 'stop' as unknown as AbortSignal }),
      { code: 'ERR_INVALID_ARG_TYPE' })
    assert.equal(source.allowHalfOpen, false)
    destroy()
  })
})
