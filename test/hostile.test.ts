import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { once } from 'node:events'
import net from 'node:net'
import { type BackendName, backends, proxy, type Splice, splice, type SpliceResult } from '../lib/index.js'
import { fdOf } from '../lib/handover.js'
import { native } from '../lib/native.js'
import {
  assertNoLeaks, type Digest, digest, eachBackend, firstOf, readExactly, receive, reset, rig, send, sleep,
  socketPair, steadyFds, stream, within
} from './helpers.js'

const KiB = 1 << 10
const MiB = 1 << 20
const GiB = 1 << 30

type Rig = Awaited<ReturnType<typeof rig>>

/** Whether the splice ends within `ms`. */
function endsWithin (sp: Splice, ms: number): Promise<boolean> {
  return within(sp.done, ms, '').then(() => true, () => false)
}

/** Resolves once `socket` has closed (at once if it already has). */
function closed (socket: net.Socket): Promise<void> {
  return socket.closed ? Promise.resolve() : firstOf(socket, ['close'])
}

/** Everything `socket` receives up to its end, and how it ended: an EOF, or a reset or destroy. */
function collect (socket: net.Socket): Promise<{ data: Buffer, end: 'eof' | 'reset' }> {
  const chunks: Buffer[] = []
  let eof = false
  socket.on('data', (d: Buffer) => chunks.push(d))
  socket.once('end', () => { eof = true })
  return firstOf(socket, ['end', 'close']).then(() => ({ data: Buffer.concat(chunks), end: eof ? 'eof' : 'reset' }))
}

/** Asserts that `data` is the start of `seed`'s stream, byte for byte: no garbage, no gap. */
function assertPrefix (data: Buffer, seed: string, what: string): void {
  assert.deepEqual(digest(data), digest(stream(seed)(data.length)), `${what}: not the stream's first ${data.length} bytes`)
}

/** The digest of the next `n` bytes of a stream, without holding them all. */
function digestNext (next: (n: number) => Buffer, n: number): Digest {
  const hash = crypto.createHash('sha256')
  for (let left = n; left > 0; left -= MiB) hash.update(next(Math.min(left, MiB)))
  return { length: n, sha256: hash.digest('hex') }
}

/** Waits until the splice's count stops growing (every buffer on the way is full); resolves with it. */
async function stalled (sp: Splice): Promise<number> {
  let last = -1
  for (let still = 0, start = Date.now(); still < 6; await sleep(250)) {
    if (Date.now() - start > 60000) throw new Error(`still moving after 60 s (${sp.bytes} bytes)`)
    still = sp.bytes === last && last > 0 ? still + 1 : 0
    last = sp.bytes
  }
  return last
}

/**
 * Lets a stalled drain's peer read again, and checks that it gets exactly
 * the splice's bytes, the stream's first ones, and that the rest of the
 * `total` sent is still in the source for JavaScript: nothing lost, nothing
 * twice.
 */
async function readBack (r: Rig, sp: Splice, seed: string, total: number): Promise<SpliceResult> {
  const atReceiver = receive(r.receiver)
  r.receiver.resume()
  const result = await within(sp.done, 30000, 'the splice did not end once its drain was read')
  r.drain.end()
  const next = stream(seed)
  assert.deepEqual(await atReceiver, digestNext(next, result.bytes), "the drain's peer did not get exactly the splice's bytes")
  const atSource = receive(r.source)
  r.source.resume()
  assert.deepEqual(await atSource, digestNext(next, total - result.bytes), 'the source does not hold exactly the rest')
  return result
}

/** Writes `seed`'s stream one byte at a time, about every millisecond, for `ms`; resolves with its digest. */
async function trickle (socket: net.Socket, seed: string, ms: number): Promise<Digest> {
  const next = stream(seed)
  const hash = crypto.createHash('sha256')
  let length = 0
  for (const end = Date.now() + ms; Date.now() < end; await sleep(1)) {
    const byte = next(1)
    hash.update(byte)
    length++
    socket.write(byte)
  }
  return { length, sha256: hash.digest('hex') }
}

// A connection to a listening server that already exists: socketPair()
// would open a listening socket first, and that one would take the
// descriptor number just closed.
async function connectTo (server: net.Server): Promise<[net.Socket, net.Socket]> {
  const accepted = once(server, 'connection')
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  const [peer] = await accepted as [net.Socket]
  if (client.connecting) await once(client, 'connect')
  return [client, peer]
}

/** Resolves once `n` (> 0) bytes have come out of `socket`, which is left flowing. */
function arrived (socket: net.Socket, n: number): Promise<void> {
  let got = 0
  return new Promise(resolve => {
    const count = (d: Buffer) => {
      got += d.length
      if (got < n) return
      socket.off('data', count)
      resolve()
    }
    socket.on('data', count)
  })
}

function codeOf (err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code
}

/**
 * Asserts that a peer's reset ended `result` as a reset must: with an error
 * from the socket (ECONNRESET or EPIPE), or with its close. On `userspace` a
 * reset that races with data may also read as a plain EOF, as it does with
 * Node's own sockets (libuv takes a short read with a hang-up as EOF); the
 * kernel backends read the socket's error themselves and must report it.
 */
function assertResetEnd (result: SpliceResult, what: string, backend: BackendName): void {
  const allowed = backend === 'userspace' ? ['error', 'close', 'eof'] : ['error', 'close']
  assert.ok(allowed.includes(result.reason), `${what} ended with ${result.reason}`)
  if (result.reason === 'error') {
    assert.ok(['ECONNRESET', 'EPIPE'].includes(codeOf(result.error)!), `${what}: error ${codeOf(result.error)}`)
  }
}

eachBackend('hostile peers', backend => {
  let fdsBefore = 0
  // Every socket a test opens is destroyed after it, pass or fail, so that a
  // failure does not spill into the next test's count.
  let opened: net.Socket[] = []
  function own<T extends net.Socket[]> (...sockets: T): T {
    opened.push(...sockets)
    return sockets
  }
  async function rigged (): Promise<Rig> {
    const r = await rig()
    own(r.sender, r.source, r.drain, r.receiver)
    return r
  }
  /** Every test ends here: no descriptor and no splice left behind. */
  const nothingLeft = () => assertNoLeaks(fdsBefore)

  before(async function () {
    if (backends().includes(backend)) fdsBefore = await steadyFds(backend)
  })
  afterEach(function () {
    for (const s of opened) s.destroy()
    opened = []
  })

  describe('a peer that resets (RST) before, during or after the splice: the other side sees a clean end', () => {
    for (const position of ['source', 'drain'] as const) {
      // The peer that resets, the socket its RST reaches, and the other side.
      const roles = (r: Rig) => position === 'source'
        ? { resetter: r.sender, hit: r.source, other: r.drain, otherPeer: r.receiver }
        : { resetter: r.receiver, hit: r.drain, other: r.source, otherPeer: r.sender }

      for (const noticed of [false, true]) {
        const when = noticed ? 'Node has seen the RST' : 'in the same tick'
        it(`before (${when}): the ${position}'s peer resets, then splice() throws at once or ends promptly`, async () => {
          const r = await rigged()
          const { resetter, hit, other, otherPeer } = roles(r)
          const atOtherPeer = collect(otherPeer)
          reset(resetter)
          if (noticed) await within(closed(hit), 5000, `the ${position} was not closed by the RST`)
          let sp: Splice | undefined
          let thrown: unknown
          try {
            sp = splice(r.source, r.drain, { backend })
          } catch (err) {
            thrown = err
          }
          if (noticed) {
            // Node has destroyed the socket: no splice can start.
            assert.equal(codeOf(thrown), 'EBADF')
          } else if (thrown) {
            // The kernel already knows: the socket has no peer any more.
            assert.ok(['ENOTCONN', 'EBADF'].includes(codeOf(thrown)!), `threw ${codeOf(thrown)}: ${thrown}`)
          } else {
            // It started: the reset ends it at once, never a hang.
            const result = await within(sp!.done, 5000, 'a splice on a reset socket did not end')
            assertResetEnd(result, 'the splice', backend)
            assert.equal(result.bytes, 0)
          }
          // The other side, closed as a proxy would, sees nothing but its end.
          other.end()
          const seen = await within(atOtherPeer, 5000, "the other side's peer did not see an end")
          assert.equal(seen.data.length, 0)
          r.destroy()
          await nothingLeft()
        })
      }

      it(`during: the ${position}'s peer resets mid-transfer; the splice ends, and the other peer sees a clean end of true bytes`, async () => {
        // Which socket call meets the RST first is a race: rounds make a misreported end show.
        for (let round = 1; round <= 10; round++) {
          const r = await rigged()
          const { resetter, other, otherPeer } = roles(r)
          const atReceiver = collect(r.receiver)
          const atOtherPeer = position === 'source' ? atReceiver : collect(otherPeer)
          const sp = splice(r.source, r.drain, { backend })
          // No end: the source's EOF can never come first.
          const sending = send(r.sender, 'reset-during', 64 * MiB, { end: false }).catch(() => undefined)
          // Reset from the receiving side's own data handler, while bytes flow.
          r.receiver.on('data', () => {
            if (r.receiver.bytesRead >= 2 * MiB && !resetter.destroyed) reset(resetter)
          })
          const result = await within(sp.done, 10000, 'the splice did not end after the reset')
          // The proxy closes the surviving side once it has written everything out.
          other.end()
          const seen = await within(atOtherPeer, 10000, 'the other peer did not see an end')
          const got = await atReceiver
          assertPrefix(got.data, 'reset-during', "the drain's peer")
          if (position === 'source') {
            // The drain survived: its peer got every byte the splice counted, then EOF.
            assert.equal(seen.end, 'eof')
            assert.equal(got.data.length, result.bytes)
          } else {
            // What was on its way to the reset peer is lost with it: never more than was counted.
            assert.ok(got.data.length <= result.bytes, `received ${got.data.length}, counted ${result.bytes}`)
            assert.equal(seen.data.length, 0, "the source's peer received bytes nobody sent it")
          }
          assertResetEnd(result, `round ${round}: the splice`, backend)
          r.destroy()
          await sending
        }
        await nothingLeft()
      })

      for (const ending of ['eof', 'unsplice'] as const) {
        it(`after the splice ended (${ending}): the ${position}'s peer resets, nothing crashes, the sockets still work or close`, async () => {
          const r = await rigged()
          const { resetter, hit, other } = roles(r)
          const sp = splice(r.source, r.drain, { backend })
          const data = stream('reset-after')(MiB)
          const arriving = readExactly(r.receiver, MiB)
          if (ending === 'eof') r.sender.end(data)
          else r.sender.write(data)
          assert.deepEqual(digest(await arriving), digest(data))
          if (ending === 'unsplice') sp.unsplice()
          assert.deepEqual(await sp.done, { bytes: MiB, reason: ending })
          reset(resetter)
          await within(closed(hit), 5000, `the ${position} did not close after its peer's RST`)
          if (ending === 'unsplice') {
            // The other connection is an ordinary one again, in the direction it carried.
            const more = stream('reset-after-more')(64 * KiB)
            if (position === 'source') {
              other.write(more)
              assert.deepEqual(digest(await readExactly(r.receiver, more.length)), digest(more))
            } else {
              r.sender.write(more)
              assert.deepEqual(digest(await readExactly(other, more.length)), digest(more))
            }
          }
          r.destroy()
          await Promise.all([r.sender, r.source, r.drain, r.receiver].map(closed))
          await nothingLeft()
        })
      }
    }

    it('through proxy(): one client resets mid-transfer both ways; proxy() resolves and the other peer sees a clean end', async () => {
      // As above, rounds: which direction meets the RST first is a race.
      for (let round = 1; round <= 20; round++) {
        const [client, a] = own(...await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true }))
        const [b, server] = own(...await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true }))
        const all = [client, a, b, server]
        for (const s of all) s.on('error', () => {})
        const proxied = proxy(a, b, { backend })
        const atServer = collect(server)
        const sending = [send(client, 'up', 64 * MiB, { end: false }), send(server, 'down', 64 * MiB, { end: false })]
          .map(p => p.catch(() => undefined))
        client.on('data', () => {
          if (client.bytesRead >= 2 * MiB && !client.destroyed) reset(client)
        })
        const { aToB, bToA } = await within(proxied, 10000, 'proxy() did not resolve after a client reset')
        // The server's connection survives: the proxy ends it once it is written out.
        b.end()
        const seen = await within(atServer, 10000, 'the server did not see an end')
        assert.equal(seen.end, 'eof')
        assert.equal(seen.data.length, aToB.bytes)
        assertPrefix(seen.data, 'up', 'the server')
        assertResetEnd(aToB, `round ${round}: client to server`, backend)
        assertResetEnd(bToA, `round ${round}: server to client`, backend)
        for (const s of all) s.destroy()
        await Promise.all(sending)
      }
      await nothingLeft()
    })
  })

  describe('a drain that never reads', () => {
    const total = 128 * MiB // far more than every buffer on the way holds

    it('idle still ends the splice once the buffers are full, and no byte is lost', async function () {
      this.timeout(120000)
      const r = await rigged()
      r.receiver.pause() // and not resumed until the splice has ended
      const sp = splice(r.source, r.drain, { backend, idle: 500 })
      const sending = send(r.sender, 'stalled-idle', total).catch(() => undefined)
      const result = await within(sp.done, 60000, 'idle did not end the stalled splice')
      assert.equal(result.reason, 'idle')
      assert.ok(result.bytes > 0, 'nothing moved before the stall')
      assert.deepEqual(await readBack(r, sp, 'stalled-idle', total), result)
      await sending
      r.destroy()
      await nothingLeft()
    })

    for (const spliceAfter of [0, 1000]) {
      it(`with writes still queued on the drain in Node (spliceAfter ${spliceAfter}), idle and unsplice() still end it`, async function () {
        for (const ending of ['idle', 'unsplice'] as const) {
          const r = await rigged()
          r.receiver.pause()
          // Fill every buffer on the way, then queue 1 MiB more in Node.
          const next = stream(`queued-${ending}`)
          let queued = 0
          while (r.drain.writableLength < MiB) {
            const chunk = next(64 * KiB)
            r.drain.write(chunk)
            queued += chunk.length
            await sleep(1)
          }
          const sp = splice(r.source, r.drain, { backend, spliceAfter, idle: ending === 'idle' ? 300 : 0 })
          r.sender.write(next(5000))
          if (ending === 'unsplice') {
            await sleep(100)
            sp.unsplice()
          }
          const result = await within(sp.done, 5000, `${ending} did not end a splice whose drain holds queued writes`)
          assert.equal(result.reason, ending)
          // The drain's peer, reading again, gets the queued bytes, then exactly the splice's.
          const atReceiver = readExactly(r.receiver, queued + result.bytes)
          r.receiver.resume()
          assert.deepEqual(digest(await atReceiver), digest(stream(`queued-${ending}`)(queued + result.bytes)))
          r.destroy()
        }
        await nothingLeft()
      })
    }

    it('with no idle the splice stays, the process does not spin, and unsplice() takes it back', async function () {
      this.timeout(120000)
      const r = await rigged()
      r.receiver.pause()
      const sp = splice(r.source, r.drain, { backend })
      let ended = false
      sp.once('end', () => { ended = true })
      const sending = send(r.sender, 'stalled', total).catch(() => undefined)
      const stalledAt = await stalled(sp)
      // A worker spinning on a full drain would burn about 2 s of CPU here.
      const cpu = process.cpuUsage()
      await sleep(2000)
      const { user, system } = process.cpuUsage(cpu)
      assert.ok(user + system < 200000, `${(user + system) / 1000} ms of CPU used during 2 s of stall`)
      assert.equal(ended, false)
      assert.equal(sp.bytes, stalledAt)
      // Taking the connection back must not wait for a peer that never reads.
      sp.unsplice()
      const prompt = await endsWithin(sp, 5000)
      // Reading lets out whatever was held back, so the bytes are checked either way.
      const result = await readBack(r, sp, 'stalled', total)
      assert.equal(result.reason, 'unsplice')
      assert.ok(result.bytes >= stalledAt)
      assert.ok(prompt, `unsplice() did not end the splice within 5 s while its drain's peer was not reading`)
      await sending
      r.destroy()
      await nothingLeft()
    })

    it('destroying both sockets ends it, even while an unsplice() is pending', async function () {
      this.timeout(120000)
      const r = await rigged()
      r.receiver.pause()
      const sp = splice(r.source, r.drain, { backend })
      send(r.sender, 'stalled-destroyed', total).catch(() => undefined)
      await stalled(sp)
      sp.unsplice()
      r.source.destroy()
      r.drain.destroy()
      // (If it does not, the peers destroyed after the test reset both connections, which ends it.)
      const result = await within(sp.done, 5000, 'the splice did not end after both its sockets were destroyed')
      assert.ok(['unsplice', 'close'].includes(result.reason), result.reason)
      // The connection really closes: the source's peer, still writing, is told.
      await within(closed(r.sender), 5000, "the source's peer was not told that the source closed")
      r.destroy()
      await nothingLeft()
    })
  })

  describe('a source that sends one byte at a time for 10 seconds', () => {
    it('every byte arrives, in order', async function () {
      this.timeout(120000)
      const r = await rigged()
      r.sender.setNoDelay(true)
      const received = receive(r.receiver)
      const sp = splice(r.source, r.drain, { backend })
      const sent = await trickle(r.sender, 'trickle', 10000)
      r.sender.end()
      assert.deepEqual(await sp.done, { bytes: sent.length, reason: 'eof' })
      assert.deepEqual(await received, sent)
      r.destroy()
      await nothingLeft()
    })
  })

  describe('a source that sends 1 GiB as fast as it can', () => {
    it('every byte arrives, in order', async function () {
      this.timeout(300000)
      const r = await rigged()
      const received = receive(r.receiver)
      const sp = splice(r.source, r.drain, { backend })
      const sent = await send(r.sender, 'gib', GiB)
      assert.deepEqual(await sp.done, { bytes: GiB, reason: 'eof' })
      assert.deepEqual(await received, sent)
      r.destroy()
      await nothingLeft()
    })
  })

  describe('either socket destroyed from JS while a worker is mid-splice, 1,000 times', () => {
    it('no crash, no leak, no use of a closed descriptor', async function () {
      this.timeout(300000)
      const lanes = 4
      const rounds = 1000 / lanes
      // Large enough that the destroy usually lands while bytes are moving.
      const size = 4 * MiB
      let moving = 0
      let reused = 0

      async function round (fresh: net.Server, i: number) {
        const r = await rigged()
        const sp = splice(r.source, r.drain, { backend })
        send(r.sender, `round-${i}`, size, { end: false }).catch(() => undefined)
        // A random moment: a few milliseconds in, or once some of the bytes came through.
        if (i % 4 < 2) await sleep(Math.random() * 3)
        else await arrived(r.receiver, 1 + Math.floor(Math.random() * (size - 1)))
        if (sp.bytes < size) moving++
        const victim = i % 2 ? r.source : r.drain
        const fd = fdOf(victim)
        victim.destroy()
        // A new connection at once, likely on the number just closed: no
        // byte of the splice may reach it, none of its bytes may go astray.
        const [a, b] = own(...await connectTo(fresh))
        if (fdOf(a) === fd || fdOf(b) === fd) reused++
        const there = stream(`there-${i}`)(1000)
        const back = stream(`back-${i}`)(1000)
        const atB = receive(b)
        const atA = receive(a)
        a.end(there)
        b.end(back)
        assert.deepEqual(await within(atB, 10000, `round ${i}: the new connection stalled`), digest(there), `round ${i}`)
        assert.deepEqual(await within(atA, 10000, `round ${i}: the new connection stalled`), digest(back), `round ${i}`)
        const result = await within(sp.done, 10000, `round ${i}: the splice did not end after the ${victim === r.source ? 'source' : 'drain'} was destroyed`)
        assert.ok(['close', 'error'].includes(result.reason), `round ${i}: ${result.reason}`)
        r.destroy()
        a.destroy()
        b.destroy()
      }

      await Promise.all(Array.from({ length: lanes }, async (_, lane) => {
        const fresh = net.createServer().listen(0, '127.0.0.1')
        await once(fresh, 'listening')
        try {
          for (let i = lane * rounds; i < (lane + 1) * rounds; i++) await round(fresh, i)
        } finally {
          fresh.close()
        }
      }))
      // Otherwise the checks above proved little.
      assert.ok(moving >= 100, `only ${moving} of 1000 destroys came while bytes were moving`)
      assert.ok(reused >= 100, `a closed descriptor number was reused in only ${reused} of 1000 rounds`)
      await nothingLeft()
    })
  })

  describe('a slow drain on one splice never stalls the others', () => {
    it('64 splices move 4 MiB each while one stalled reader holds its splice', async function () {
      this.timeout(300000)
      const total = 128 * MiB
      const stuck = await rigged()
      stuck.receiver.pause()
      const stuckSplice = splice(stuck.source, stuck.drain, { backend })
      let stuckEnded = false
      stuckSplice.once('end', () => { stuckEnded = true })
      const stuckSending = send(stuck.sender, 'stuck', total).catch(() => undefined)
      const stalledAt = await stalled(stuckSplice)
      // Enough splices that several share the stalled one's worker thread.
      const count = Math.max(64, 4 * (native?.stats().workers ?? 0))
      const fast: Rig[] = []
      for (let i = 0; i < count; i++) fast.push(await rigged())
      const splices = fast.map(r => splice(r.source, r.drain, { backend }))
      const received = fast.map(r => receive(r.receiver))
      const sent = await within(Promise.all(fast.map((r, i) => send(r.sender, `fast-${i}`, 4 * MiB))),
        120000, 'the fast splices did not take their bytes')
      const results = await within(Promise.all(splices.map(sp => sp.done)), 120000, 'the fast splices did not end')
      for (const [i, result] of results.entries()) {
        assert.deepEqual(result, { bytes: 4 * MiB, reason: 'eof' }, `splice ${i}`)
        assert.deepEqual(await received[i], sent[i], `splice ${i}`)
      }
      // Meanwhile the stalled one is still there, still stalled.
      assert.equal(stuckEnded, false)
      assert.equal(stuckSplice.bytes, stalledAt)
      for (const r of fast) r.destroy()
      stuckSplice.unsplice()
      const result = await readBack(stuck, stuckSplice, 'stuck', total)
      assert.equal(result.reason, 'unsplice')
      await stuckSending
      stuck.destroy()
      await nothingLeft()
    })
  })
})
