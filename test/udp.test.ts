// UDP relays (OpenBSD's semantics): datagrams whole and in order, max never
// splits one, idle, unsplice and close, ICMP errors, and bad input; on
// every backend the host runs, with real sockets on 127.0.0.1 and ::1.
import assert from 'node:assert/strict'
import dgram from 'node:dgram'
import { once } from 'node:events'
import { type BackendName, backends, proxy, splice } from '../lib/index.js'
import { handleOf, receiving } from '../lib/datagram.js'
import { native } from '../lib/native.js'
import { assertNoLeaks, digest, eventually, openFds, sleep, socketPair, stream, within } from './helpers.js'

type Family = 'udp4' | 'udp6'
const loopback = { udp4: '127.0.0.1', udp6: '::1' }

/** A UDP socket bound on loopback, connected to `peer` if given. */
async function udp (family: Family, peer?: number, peerFamily: Family = family): Promise<dgram.Socket> {
  const socket = dgram.createSocket(family)
  socket.bind(0, loopback[family])
  await once(socket, 'listening')
  if (peer !== undefined) await new Promise<void>(resolve => socket.connect(peer, loopback[peerFamily], resolve))
  return socket
}

function portOf (socket: dgram.Socket): number {
  return socket.address().port
}

/**
 * sender -> source (spliced) drain -> receiver. The receiver keeps every
 * datagram it gets, in order.
 */
async function udpRig (sourceFamily: Family = 'udp4', drainFamily: Family = sourceFamily) {
  const receiver = await udp(drainFamily)
  const source = await udp(sourceFamily)
  const drain = await udp(drainFamily, portOf(receiver))
  const sender = await udp(sourceFamily, portOf(source))
  const got: Buffer[] = []
  receiver.on('message', (m: Buffer) => got.push(m))
  const all = [receiver, source, drain, sender]
  for (const s of all) s.on('error', () => {})
  return { receiver, source, drain, sender, got, close: () => all.forEach(s => s.close()) }
}

/**
 * Sends `datagrams` in windows of `window`, each once `got` has caught up:
 * paced, so that no socket buffer overflows (a receiver holds about 256
 * small datagrams by default). `onSend` runs after each send.
 */
async function sendPaced (sender: dgram.Socket, datagrams: Buffer[], got: () => number, window = 32,
  onSend = () => {}): Promise<void> {
  for (let at = 0; at < datagrams.length; at += window) {
    for (const d of datagrams.slice(at, at + window)) {
      sender.send(d)
      onSend()
    }
    const want = Math.min(at + window, datagrams.length)
    if (!await eventually(() => got() >= want, 10_000)) throw new Error(`${got()} of ${want} datagrams arrived`)
  }
}

/**
 * client <-> a (proxied) b <-> server, all connected; `up` keeps what the
 * server receives, `down` what the client does.
 */
async function udpProxyRig () {
  const client = await udp('udp4')
  const server = await udp('udp4')
  const a = await udp('udp4', portOf(client))
  const b = await udp('udp4', portOf(server))
  await new Promise<void>(resolve => client.connect(portOf(a), '127.0.0.1', resolve))
  await new Promise<void>(resolve => server.connect(portOf(b), '127.0.0.1', resolve))
  const up: Buffer[] = []
  const down: Buffer[] = []
  server.on('message', (m: Buffer) => up.push(m))
  client.on('message', (m: Buffer) => down.push(m))
  return { client, server, a, b, up, down }
}

/** Datagrams of `size` bytes (or size(i)), each starting with its sequence number. */
function numbered (count: number, size: number | ((i: number) => number), seed: string): Buffer[] {
  const next = stream(seed)
  return Array.from({ length: count }, (_, i) => {
    const d = next(typeof size === 'number' ? size : size(i))
    if (d.length >= 4) d.writeUInt32BE(i)
    return d
  })
}

/** OpenBSD's kernel counts the bytes it splices, not the datagrams: there a result has no `datagrams`. */
function countsDatagrams (backend: BackendName): boolean {
  return !(backend === 'so_splice' && process.platform === 'openbsd')
}

/** The result `backend` gives for `datagrams` datagrams of `bytes` in all. */
function udpResult (backend: BackendName, bytes: number, datagrams: number, reason: string) {
  return countsDatagrams(backend) ? { bytes, datagrams, reason } : { bytes, reason }
}

for (const backend of ['so_splice', 'pipe', 'userspace'] as const) {
  const why = !backends().includes(backend) ? ` (skipped: this host has ${native?.backend ?? 'no addon'})` : ''
  describe(`UDP relays [${backend}]${why}`, function () {
    before(function () { if (why) this.skip() })
    udpSuite(backend)
  })
}

function udpSuite (backend: BackendName) {
  it('keeps boundaries: datagrams of 0, 1, 1400 and 65507 bytes arrive whole, in order, counted', async () => {
    const r = await udpRig()
    const s = splice(r.source, r.drain, { backend })
    assert.equal(s.backend, backend)
    const sizes = [0, 1, 1400, 65507]
    const datagrams = sizes.map(n => stream(`boundary-${n}`)(n))
    await sendPaced(r.sender, datagrams, () => r.got.length, 1)
    assert.deepEqual(r.got.map(digest), datagrams.map(digest))
    assert.equal(s.bytes, 1 + 1400 + 65507)
    assert.deepEqual(await s.unsplice(), udpResult(backend, 66908, 4, 'unsplice'))
    r.close()
  })

  it('100,000 datagrams of mixed sizes at a paced rate: none lost, none duplicated, none merged or cut, in order', async function () {
    this.timeout(120_000)
    const r = await udpRig()
    const s = splice(r.source, r.drain, { backend })
    // Runs of one size, shorter and longer ones after them: the engine sends
    // a run as one GSO send, which must come out as the same datagrams.
    const sizes = [64, 64, 64, 40, 64, 100, 100, 4, 4, 1400, 1400, 1400, 64]
    const datagrams = numbered(100_000, i => sizes[i % sizes.length], 'many')
    const total = datagrams.reduce((n, d) => n + d.length, 0)
    await sendPaced(r.sender, datagrams, () => r.got.length, 128)
    assert.equal(r.got.length, datagrams.length)
    r.got.forEach((d, i) => {
      if (d.length !== datagrams[i].length || d.readUInt32BE(0) !== i) {
        assert.fail(`datagram ${i} is number ${d.readUInt32BE(0)} of ${d.length} bytes`)
      }
    })
    assert.deepEqual(digest(Buffer.concat(r.got)), digest(Buffer.concat(datagrams)))
    assert.deepEqual(await s.unsplice(), udpResult(backend, total, 100_000, 'unsplice'))
    r.close()
  })

  it('max never splits a datagram: max 1000 with 300-byte datagrams moves three; the fourth stays for JavaScript', async () => {
    const r = await udpRig()
    const mine: Buffer[] = []
    r.source.on('message', (m: Buffer) => mine.push(m))
    const s = splice(r.source, r.drain, { backend, max: 1000 })
    const datagrams = numbered(4, 300, 'max')
    for (const d of datagrams.slice(0, 3)) r.sender.send(d)
    assert.ok(await eventually(() => r.got.length === 3))
    r.sender.send(datagrams[3])
    assert.deepEqual(await within(s.done, 5000, 'ended at max'), udpResult(backend, 900, 3, 'max'))
    // The source is an ordinary socket again: its listener gets the fourth.
    assert.ok(await eventually(() => mine.length === 1))
    assert.deepEqual(mine.map(digest), [digest(datagrams[3])])
    assert.deepEqual(r.got.map(digest), datagrams.slice(0, 3).map(digest))
    r.close()
  })

  it('max far above one datagram: the batches stay within it, and the datagram that would pass it stays for JavaScript', async () => {
    const r = await udpRig()
    const mine: Buffer[] = []
    r.source.on('message', (m: Buffer) => mine.push(m))
    // 1,000 datagrams of 300 bytes fit, with 100 bytes to spare.
    const s = splice(r.source, r.drain, { backend, max: 300_100 })
    const datagrams = numbered(1001, 300, 'max-batches')
    await sendPaced(r.sender, datagrams.slice(0, 1000), () => r.got.length, 128)
    r.sender.send(datagrams[1000])
    assert.deepEqual(await within(s.done, 5000, 'ended at max'), udpResult(backend, 300_000, 1000, 'max'))
    assert.ok(await eventually(() => mine.length === 1))
    assert.deepEqual(mine.map(digest), [digest(datagrams[1000])])
    assert.deepEqual(r.got.map(digest), datagrams.slice(0, 1000).map(digest))
    r.close()
  })

  it('idle: a datagram every 100 ms keeps idle 300 going; silence ends it', async () => {
    const r = await udpRig()
    const s = splice(r.source, r.drain, { backend, idle: 300 })
    let ended = false
    s.done.then(() => { ended = true })
    for (let i = 0; i < 10; i++) {
      r.sender.send(Buffer.from([i]))
      await sleep(100)
    }
    assert.equal(ended, false, 'a trickle ended it')
    assert.deepEqual(await within(s.done, 5000, 'idle end'), udpResult(backend, 10, 10, 'idle'))
    assert.equal(r.got.length, 10)
    r.close()
  })

  for (const ending of ['unsplice', 'close'] as const) {
    it(`${ending} mid-stream: every datagram sent reached the drain or stayed for the source, in order, none twice`, async () => {
      const r = await udpRig()
      const mine: Buffer[] = []
      r.source.on('message', (m: Buffer) => mine.push(m))
      const s = splice(r.source, r.drain, { backend })
      const datagrams = numbered(2000, 200, ending)
      let sent = 0
      // Ended in the middle of a window of datagrams on their way.
      const ended = sendPaced(r.sender, datagrams, () => r.got.length + mine.length, 32, () => {
        if (++sent === 1000) ending === 'unsplice' ? s.unsplice() : r.drain.close()
      })
      await ended
      const result = await s.done
      assert.equal(result.reason, ending)
      const moved = countsDatagrams(backend) ? result.datagrams! : result.bytes / 200
      assert.ok(moved >= 900 && moved <= 1032, `${moved} moved`)
      assert.equal(r.got.length, moved)
      assert.deepEqual(result, udpResult(backend, 200 * moved, moved, ending))
      assert.deepEqual([...r.got, ...mine].map(digest), datagrams.map(digest))
      for (const x of [r.receiver, r.source, r.sender, ...ending === 'close' ? [] : [r.drain]]) x.close()
    })
  }

  it('IPv6 into IPv4', async () => {
    const r = await udpRig('udp6', 'udp4')
    const s = splice(r.source, r.drain, { backend })
    const datagrams = numbered(1000, 512, 'v6-v4')
    await sendPaced(r.sender, datagrams, () => r.got.length)
    assert.deepEqual(r.got.map(digest), datagrams.map(digest))
    assert.deepEqual(await s.unsplice(), udpResult(backend, 512_000, 1000, 'unsplice'))
    r.close()
  })

  it('a datagram larger than the drain can send (IPv6 65527 bytes into IPv4) ends it with EMSGSIZE', async () => {
    const r = await udpRig('udp6', 'udp4')
    const s = splice(r.source, r.drain, { backend })
    r.sender.send(Buffer.alloc(100))
    assert.ok(await eventually(() => r.got.length === 1))
    r.sender.send(Buffer.alloc(65527))
    const result = await within(s.done, 5000, 'an end')
    assert.equal((result.error as NodeJS.ErrnoException).code, 'EMSGSIZE')
    assert.deepEqual(result, { ...udpResult(backend, 100, 1, 'error'), error: result.error })
    r.close()
  })

  it('a drain whose peer is gone ends with ECONNREFUSED (ICMP port unreachable)', async () => {
    const gone = await udp('udp4')
    const port = portOf(gone)
    gone.close()
    const source = await udp('udp4')
    const drain = await udp('udp4', port)
    const sender = await udp('udp4', portOf(source))
    drain.on('error', () => {})
    const s = splice(source, drain, { backend })
    // The first send draws the ICMP error; a later one or the socket reports it.
    const timer = setInterval(() => sender.send('x'), 20)
    const result = await within(s.done, 5000, 'an end')
    clearInterval(timer)
    assert.equal(result.reason, 'error')
    assert.equal((result.error as NodeJS.ErrnoException).code, 'ECONNREFUSED')
    for (const x of [source, drain, sender]) x.close()
  })

  it('proxy(): two connected sockets both ways, datagrams whole each way, counted live and at the end', async () => {
    const { client, server, a, b, up, down } = await udpProxyRig()
    const p = proxy(a, b, { backend })
    const ups = numbered(500, 1000, 'up')
    const downs = numbered(300, 1400, 'down')
    await Promise.all([sendPaced(client, ups, () => up.length), sendPaced(server, downs, () => down.length)])
    assert.deepEqual(p.bytes, { aToB: 500_000, bToA: 420_000 })
    assert.deepEqual(up.map(digest), ups.map(digest))
    assert.deepEqual(down.map(digest), downs.map(digest))
    a.close()
    const { aToB, bToA } = await p
    assert.deepEqual([aToB, bToA], [udpResult(backend, 500_000, 500, 'close'), udpResult(backend, 420_000, 300, 'close')])
    for (const x of [client, server, b]) x.close()
  })

  it('proxy(): a direction that ends (max) gives its source back while the other goes on', async () => {
    const { client, server, a, b, up, down } = await udpProxyRig()
    const kept: Buffer[] = []
    a.on('message', (m: Buffer) => kept.push(m))
    const p = proxy(a, b, { backend, max: 1000 })
    const ups = numbered(4, 300, 'up-max')
    await sendPaced(client, ups.slice(0, 3), () => up.length)
    client.send(ups[3])
    // a to b has ended at max; its fourth datagram reaches a's listener now.
    assert.ok(await eventually(() => kept.length === 1), 'the source was not given back while the other direction ran')
    assert.deepEqual(kept.map(digest), [digest(ups[3])])
    const downs = numbered(3, 200, 'down-max')
    await sendPaced(server, downs, () => down.length)
    assert.deepEqual(down.map(digest), downs.map(digest))
    a.close()
    const { aToB, bToA } = await p
    assert.deepEqual([aToB, bToA], [udpResult(backend, 900, 3, 'max'), udpResult(backend, 600, 3, 'close')])
    for (const x of [client, server, b]) x.close()
  })

  it('rejects at once: an unconnected drain ENOTCONN, TCP with UDP EPROTONOSUPPORT, a closed socket EBADF, a busy one EBUSY, spliceAfter', async () => {
    const source = await udp('udp4')
    const loose = await udp('udp4')
    assert.throws(() => splice(source, loose, { backend }), { code: 'ENOTCONN' })
    const [tcp, peer] = await socketPair()
    const drain = await udp('udp4', portOf(loose))
    assert.throws(() => splice(source, tcp as never, { backend }), { code: 'EPROTONOSUPPORT' })
    assert.throws(() => splice(tcp as never, drain, { backend }), { code: 'EPROTONOSUPPORT' })
    assert.throws(() => proxy(source, drain, { backend }), { code: 'ENOTCONN' })
    assert.throws(() => splice(source, drain, { backend, spliceAfter: 0 }), { code: 'ERR_INVALID_ARG_VALUE' })
    const unbound = dgram.createSocket('udp4')
    assert.throws(() => splice(unbound, drain, { backend }), { code: 'EINVAL' })
    unbound.close()
    const s = splice(source, drain, { backend })
    const other = await udp('udp4', portOf(loose))
    assert.throws(() => splice(source, other, { backend }), { code: 'EBUSY' })
    assert.equal((await s.unsplice()).reason, 'unsplice')
    other.close()
    const closed = await udp('udp4', portOf(loose))
    closed.close()
    assert.throws(() => splice(source, closed, { backend }), { code: 'EBADF' })
    for (const x of [source, loose, drain]) x.close()
    tcp.destroy()
    peer.destroy()
  })

  it('500 concurrent splices each carry a datagram; after they end no descriptor or relay is left', async function () {
    this.timeout(60_000)
    const before = openFds()
    const receiver = await udp('udp4')
    const sender = await udp('udp4')
    const got = new Set<string>()
    receiver.on('message', (m: Buffer) => got.add(m.toString()))
    const pairs = await Promise.all(Array.from({ length: 500 }, async () => [await udp('udp4'), await udp('udp4', portOf(receiver))]))
    const splices = pairs.map(([source, drain]) => splice(source, drain, { backend }))
    for (let i = 0; i < 500; i++) {
      sender.send(`splice ${i}`, portOf(pairs[i][0]), '127.0.0.1')
      if (i % 50 === 49 && !await eventually(() => got.size === i + 1)) assert.fail(`${got.size} of ${i + 1} arrived`)
    }
    const ends = await Promise.all(splices.map((s, i) => i % 2 ? s.unsplice() : (pairs[i][0].close(), s.done)))
    ends.forEach((e, i) => assert.deepEqual(e, udpResult(backend, `splice ${i}`.length, 1, i % 2 ? 'unsplice' : 'close')))
    for (const [source, drain] of pairs) {
      drain.close()
      try { source.close() } catch {} // the even ones are closed already
    }
    receiver.close()
    sender.close()
    await assertNoLeaks(before)
  })
}

describe("the addon's strays (what proxy --udp takes from a new flow's socket)", () => {
  before(function () { if (!native) this.skip() })

  it('datagrams from two senders before connect() come back in order, then only the peer\'s; given up by force, the marker is named', async () => {
    const socket = await udp('udp4')
    const handle = handleOf(socket)!
    receiving(handle, false)
    const [peer, other] = [await udp('udp4'), await udp('udp4')]
    const early = numbered(4, 100, 'strays')
    for (const [i, d] of early.entries()) (i % 2 ? other : peer).send(d, portOf(socket), '127.0.0.1')
    await sleep(50)
    await new Promise<void>(resolve => socket.connect(portOf(peer), '127.0.0.1', resolve))
    const back = native!.sendMarker(handle.fd)
    let taken = native!.takeStrays(handle.fd, back, false)
    const strays = [...taken.strays]
    for (let i = 0; !taken.done && i < 100; i++) {
      await sleep(10)
      taken = native!.takeStrays(handle.fd, back, false)
      strays.push(...taken.strays)
    }
    assert.equal(taken.done, true)
    assert.equal(taken.marker, undefined)
    assert.deepEqual(strays.map(s => digest(s.data)), early.map(digest))
    assert.deepEqual(strays.map(s => s.port), early.map((_, i) => portOf(i % 2 ? other : peer)))
    // Connected back: the peer's datagrams arrive, the other's do not.
    const after: Buffer[] = []
    socket.on('message', (m: Buffer) => after.push(m))
    receiving(handle, true)
    other.send('not mine', portOf(socket), '127.0.0.1')
    peer.send('mine', portOf(socket), '127.0.0.1')
    assert.ok(await eventually(() => after.length === 1))
    assert.equal(after[0].toString(), 'mine')
    // Forced at once: whether or not its marker had come, it is named.
    receiving(handle, false)
    const forced = native!.takeStrays(handle.fd, native!.sendMarker(handle.fd), true)
    assert.equal(forced.done, true)
    assert.equal(forced.marker?.address, '127.0.0.1')
    assert.ok(forced.marker!.port > 0 && ![portOf(socket), portOf(peer)].includes(forced.marker!.port))
    for (const s of [socket, peer, other]) s.close()
  })
})
