import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import { holdReading } from '../lib/handover.js'
import { getSplice, setSplice } from '../lib/index.js'
import { native } from '../lib/native.js'
import { digest, eventually, readExactly, rig, sleep, stream, unixSocketPair, within } from './helpers.js'

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
    assert.ok(await eventually(() => native!.stats().relays === 0))
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
    assert.ok(await eventually(() => native!.stats().relays === 0))
    assert.equal(getSplice(fd(r.source)), 0)
    r.destroy()
  })

  it('descriptors above INT32_MAX are EBADF, never another descriptor modulo 2 ** 32', async () => {
    const r = await rig()
    assert.throws(() => setSplice(2 ** 32 + fd(r.source), fd(r.drain)), { code: 'EBADF' })
    assert.throws(() => setSplice(fd(r.source), 2 ** 32 + fd(r.drain)), { code: 'EBADF' })
    assert.throws(() => getSplice(2 ** 32 + fd(r.source)), { code: 'EBADF' })
    assert.equal(native!.stats().relays, 0)
    r.destroy()
  })

  it("the engine's own checks: a listening socket, an unconnected one, mixed protocols, the same socket", async () => {
    const r = await rig()
    const server = net.createServer().listen(0, '127.0.0.1')
    await once(server, 'listening')
    assert.throws(() => setSplice(fd(server), fd(r.drain)), { code: 'EINVAL' })
    assert.throws(() => setSplice(fd(r.source), fd(server)), { code: 'EINVAL' })
    // A connection refused: its descriptor never had a peer.
    const { port } = server.address() as net.AddressInfo
    server.close()
    await once(server, 'close')
    const refused = net.connect(port, '127.0.0.1').on('error', () => {})
    await new Promise(process.nextTick)
    assert.throws(() => setSplice(fd(refused), fd(r.drain)), { code: 'ENOTCONN' })
    refused.destroy()
    const [unixClient, unixPeer] = await unixSocketPair()
    assert.throws(() => setSplice(fd(r.source), fd(unixClient)), { code: 'EPROTONOSUPPORT' })
    assert.throws(() => setSplice(fd(r.source), fd(r.source)), { code: 'EINVAL' })
    assert.equal(native!.stats().relays, 0)
    for (const s of [unixClient, unixPeer]) s.destroy()
    r.destroy()
  })

  it('UDP descriptors: datagrams whole on pipe (FreeBSD: EPROTONOSUPPORT); an unconnected drain ENOTCONN; TCP with UDP EPROTONOSUPPORT', async () => {
    const udp = async (peer?: number) => {
      const s = dgram.createSocket('udp4')
      s.bind(0, '127.0.0.1')
      await once(s, 'listening')
      if (peer) await new Promise<void>(resolve => s.connect(peer, '127.0.0.1', resolve))
      return s
    }
    // Node's dgram handle, to stop Node receiving on the source.
    const handle = (s: dgram.Socket) => (s as unknown as Record<symbol, { handle: { fd: number, recvStop (): void } }>)[
      Object.getOwnPropertySymbols(s).find(k => k.description === 'state symbol')!].handle
    const receiver = await udp()
    const source = await udp()
    const drain = await udp(receiver.address().port)
    const sender = await udp(source.address().port)
    const r = await rig()
    assert.throws(() => setSplice(handle(source).fd, handle(receiver).fd), { code: 'ENOTCONN' })
    assert.throws(() => setSplice(handle(source).fd, fd(r.drain)), { code: 'EPROTONOSUPPORT' })
    assert.throws(() => setSplice(fd(r.source), handle(drain).fd), { code: 'EPROTONOSUPPORT' })
    if (native!.backend === 'so_splice') {
      assert.throws(() => setSplice(handle(source).fd, handle(drain).fd), { code: 'EPROTONOSUPPORT' })
    } else {
      handle(source).recvStop()
      const done = setSplice(handle(source).fd, handle(drain).fd, { max: 1000 })
      const got: Buffer[] = []
      receiver.on('message', (m: Buffer) => got.push(m))
      const datagrams = [stream('fd-udp-1')(300), stream('fd-udp-2')(0), stream('fd-udp-3')(700), stream('fd-udp-4')(1)]
      for (const d of datagrams) sender.send(d)
      assert.deepEqual(await within(done, 5000, 'max'), { bytes: 1000, reason: 'max', residual: Buffer.alloc(0) })
      assert.ok(await eventually(() => got.length === 3))
      assert.deepEqual(got.map(digest), datagrams.slice(0, 3).map(digest))
    }
    assert.ok(await eventually(() => native!.stats().relays === 0))
    for (const s of [receiver, source, drain, sender]) s.close()
    r.destroy()
  })

  it('a refused second splice of a live source leaves the first one in place, and it unsplices', async () => {
    const r = await rig()
    holdReading(r.source)
    const first = setSplice(fd(r.source), fd(r.drain))
    assert.throws(() => setSplice(fd(r.source), fd(r.receiver)), { code: 'EBUSY' })
    r.sender.write('still here')
    assert.equal((await readExactly(r.receiver, 10)).toString(), 'still here')
    assert.equal(setSplice(fd(r.source), -1), first)
    assert.deepEqual(await first, { bytes: 10, reason: 'unsplice', residual: Buffer.alloc(0) })
    r.destroy()
  })

  it('a descriptor closed and reused names another socket: no stale count, nothing to unsplice', async () => {
    const r = await rig()
    holdReading(r.source)
    const number = fd(r.source)
    const spliced = setSplice(number, fd(r.drain), { max: 1000 })
    r.sender.write(stream('reuse')(4000))
    assert.equal((await spliced).bytes, 1000)
    assert.equal(getSplice(number), 1000)
    r.source.destroy()
    await once(r.source, 'close')
    assert.throws(() => getSplice(number), { code: 'EBADF' })
    // The next socket Node opens takes the lowest free number: this one.
    const again = await rig()
    assert.ok([again.sender, again.source, again.drain, again.receiver].some(s => fd(s) === number), 'not reused')
    assert.equal(getSplice(number), 0)
    assert.throws(() => setSplice(number, -1), { code: 'ENOTCONN' })
    again.destroy()
    r.destroy()
  })

  it('unsplice with a drain that never reads ends at once: the bytes in flight come back, none lost', async function () {
    this.timeout(120000)
    const r = await rig()
    const holds = [holdReading(r.source), holdReading(r.receiver)]
    const total = 64 << 20
    const next = stream('stalled')
    const data = next(total)
    const spliced = setSplice(fd(r.source), fd(r.drain))
    r.sender.write(data)
    // Until every buffer on the way is full: the count stands still for 1.5 s.
    for (let last = -1, still = 0; still < 6; await sleep(250)) {
      still = getSplice(fd(r.source)) === last ? still + 1 : 0
      last = getSplice(fd(r.source))
    }
    setSplice(fd(r.source), -1)
    const result = await within(spliced, 2000, 'the unsplice did not end')
    assert.equal(result.reason, 'unsplice')
    // The drain's peer holds the first `bytes`; the residual (whatever was
    // in the pipe beyond what the drain had room for) is next; the source
    // has the rest.
    for (const h of holds) h.release(false)
    const rest = total - result.bytes - result.residual.length
    assert.deepEqual(digest(result.residual), digest(data.subarray(result.bytes, result.bytes + result.residual.length)))
    assert.deepEqual(digest(await readExactly(r.receiver, result.bytes)), digest(data.subarray(0, result.bytes)))
    assert.deepEqual(digest(await readExactly(r.source, rest)), digest(data.subarray(total - rest)))
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
