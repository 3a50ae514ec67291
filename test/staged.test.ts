import assert from 'node:assert/strict'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { proxy, splice } from '../lib/index.js'
import { autoSpliceAfter } from '../lib/options.js'
import { native } from '../lib/native.js'
import { digest, eachBackend, eventually, readExactly, receive, rig, send, sleep, socketPair, stream } from './helpers.js'

// spliceAfter: the first bytes of a splice are copied in JavaScript, the
// rest is spliced. (With the userspace backend it changes nothing, and these
// tests check that too.)

const KiB = 1024
const MiB = 1 << 20

eachBackend('spliceAfter', backend => {
  it('moves every byte in order across the hand-over', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const sp = splice(source, drain, { backend, spliceAfter: 64 * KiB })
    const [sent, got, result] = await Promise.all([send(sender, 'staged', 16 * MiB), receive(receiver), sp.done])
    assert.deepEqual(got, sent)
    assert.deepEqual(result, { bytes: 16 * MiB, reason: 'eof' })
    destroy()
  })

  it('a transfer that ends within spliceAfter never starts a kernel splice (kernel backends only)', async function () {
    if (backend === 'userspace') this.skip()
    const { sender, source, drain, receiver, destroy } = await rig()
    const before = native!.stats().relays
    const sp = splice(source, drain, { backend, spliceAfter: 64 * KiB })
    const next = stream('short')
    const first = next(60 * KiB)
    sender.write(first)
    assert.deepEqual(await readExactly(receiver, first.length), first)
    assert.equal(native!.stats().relays, before, 'a kernel splice started before spliceAfter bytes')
    // Past the threshold the kernel takes over.
    const second = next(1 * MiB)
    sender.write(second)
    assert.ok(await eventually(() => native!.stats().relays === before + 1), 'no kernel splice after spliceAfter bytes')
    assert.deepEqual(await readExactly(receiver, second.length), second)
    sp.unsplice()
    assert.deepEqual(await sp.done, { bytes: first.length + second.length, reason: 'unsplice' })
    destroy()
  })

  it('max counts both stages: exactly max bytes, the rest stays in the source', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const sent = stream('staged-max')(300 * KiB)
    const max = 200 * KiB + 7
    const sp = splice(source, drain, { backend, max, spliceAfter: 64 * KiB })
    sender.write(sent)
    assert.deepEqual(await sp.done, { bytes: max, reason: 'max' })
    assert.deepEqual(digest(await readExactly(receiver, max)), digest(sent.subarray(0, max)))
    assert.deepEqual(digest(await readExactly(source, sent.length - max)), digest(sent.subarray(max)))
    await sleep(50)
    assert.equal(receiver.readableLength, 0)
    destroy()
  })

  it('idle and unsplice end either stage', async () => {
    for (const size of [10 * KiB, 200 * KiB]) {
      const { sender, source, drain, receiver, destroy } = await rig()
      const data = stream(`staged-idle-${size}`)(size)
      const idle = splice(source, drain, { backend, idle: 200, spliceAfter: 64 * KiB })
      sender.write(data)
      assert.deepEqual(await idle.done, { bytes: size, reason: 'idle' }, `${size} bytes`)
      assert.deepEqual(await readExactly(receiver, size), data)
      const stopped = splice(source, drain, { backend, spliceAfter: 64 * KiB })
      sender.write(data)
      assert.deepEqual(await readExactly(receiver, size), data)
      stopped.unsplice()
      assert.deepEqual(await stopped.done, { bytes: size, reason: 'unsplice' }, `${size} bytes`)
      destroy()
    }
  })

  it('throws at once what the kernel stage would refuse (kernel backends only)', async function () {
    if (backend === 'userspace') this.skip()
    const { source, destroy } = await rig()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sosplice-'))
    const server = net.createServer().listen(path.join(dir, 'sock'))
    await once(server, 'listening')
    const local = net.connect(path.join(dir, 'sock'))
    await once(local, 'connect')
    try {
      // A TCP source into a Unix-domain drain: the kernel stage cannot splice them.
      assert.throws(() => splice(source, local, { backend, spliceAfter: 1024 }), { code: 'EPROTONOSUPPORT' })
    } finally {
      local.destroy()
      server.close()
      fs.rmSync(dir, { recursive: true })
      destroy()
    }
  })

  it('a source closed both ways with bytes still queued: every byte crosses the hand-over, then eof', async () => {
    // Its peer sent and closed, and it sent its own FIN: the kernel calls the
    // socket closed while its receive queue still holds most of the bytes.
    const { sender, source, drain, receiver, destroy } = await rig()
    const data = stream('closed-queued')(100 * KiB)
    sender.end(data)
    source.end()
    await once(sender, 'close')
    const received = receive(receiver)
    const sp = splice(source, drain, { backend, spliceAfter: 16 * KiB })
    assert.deepEqual(await sp.done, { bytes: data.length, reason: 'eof' })
    assert.deepEqual(await received, digest(data))
    destroy()
  })

  it('rejects a spliceAfter that is not a whole number of bytes', async () => {
    const { source, drain, destroy } = await rig()
    assert.throws(() => splice(source, drain, { backend, spliceAfter: -1 }), { code: 'ERR_OUT_OF_RANGE' })
    assert.throws(() => splice(source, drain, { backend, spliceAfter: 1.5 }), { code: 'ERR_OUT_OF_RANGE' })
    assert.throws(() => splice(source, drain, { backend, spliceAfter: '64K' as unknown as number }),
      { code: 'ERR_INVALID_ARG_TYPE' })
    destroy()
  })
})

describe(`default options: the first bytes in JavaScript, the rest in the kernel${native ? '' : ' (skipped: no kernel backend on this host)'}`, () => {
  before(function () { if (!native) this.skip() })

  it(`a connection under ${autoSpliceAfter} bytes each way never reaches the kernel; past it, the kernel takes over both directions`, async () => {
    const [client, a] = await socketPair()
    const [b, server] = await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true })
    const before = native!.stats().relays
    const proxied = proxy(a, b)
    const next = stream('auto')
    const request = next(1 * KiB)
    client.write(request)
    assert.deepEqual(await readExactly(server, request.length), request)
    const reply = next(1 * KiB)
    server.write(reply)
    assert.deepEqual(await readExactly(client, reply.length), reply)
    assert.equal(native!.stats().relays, before, 'a kernel relay for a few bytes')
    // A download past the threshold: the connection goes to the kernel.
    const download = next(4 * MiB)
    const atClient = readExactly(client, download.length)
    server.write(download)
    assert.ok(await eventually(() => native!.stats().relays === before + 1), 'no kernel relay past the threshold')
    assert.deepEqual(digest(await atClient), digest(download))
    const upload = next(256 * KiB)
    const atServer = receive(server)
    client.end(upload)
    assert.deepEqual(await atServer, digest(upload))
    server.end()
    const { aToB, bToA } = await proxied
    assert.deepEqual(aToB, { bytes: request.length + upload.length, reason: 'eof' })
    assert.deepEqual(bToA, { bytes: reply.length + download.length, reason: 'eof' })
    assert.equal(native!.stats().relays, before)
    for (const s of [client, a, b, server]) s.destroy()
  })

  it('spliceAfter: 0 splices from the first byte, in the same call', async () => {
    const { sender, source, drain, receiver, destroy } = await rig()
    const before = native!.stats().relays
    const sp = splice(source, drain, { spliceAfter: 0 })
    assert.equal(native!.stats().relays, before + 1)
    const [sent, got] = await Promise.all([send(sender, 'auto-0', 1 * MiB), receive(receiver)])
    assert.deepEqual(got, sent)
    assert.deepEqual(await sp.done, { bytes: 1 * MiB, reason: 'eof' })
    destroy()
  })
})
