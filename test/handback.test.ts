import assert from 'node:assert/strict'
import { proxy, splice } from '../lib/index.js'
import { digest, eachBackend, eventually, readExactly, receive, rig, send, sleep, stream, unixSocketPair, within } from './helpers.js'

// Before a splice the sockets are Node's, after it they are Node's again,
// in the state they were in; while spliced they behave as sockets whose
// bytes are moving.

const KiB = 1 << 10
const MiB = 1 << 20

type Rig = Awaited<ReturnType<typeof rig>>

/** Resolves with the next `n` bytes `socket` emits as 'data'. */
function dataEvents (socket: Rig['source'], n: number): Promise<Buffer> {
  return new Promise(resolve => {
    const chunks: Buffer[] = []
    let have = 0
    socket.on('data', (d: Buffer) => {
      chunks.push(d)
      have += d.length
      if (have >= n) resolve(Buffer.concat(chunks))
    })
  })
}

eachBackend('handing sockets back', backend => {
  const endings = {
    max: { options: { max: 5 }, end: async () => {} },
    unsplice: { options: {}, end: async (sp: ReturnType<typeof splice>) => sp.unsplice() },
    idle: { options: { idle: 200 }, end: async () => {} }
  }
  for (const [ending, { options, end }] of Object.entries(endings)) {
    it(`after ${ending}, a source nobody was reading is flowing again for a later 'data' listener`, async () => {
      const r = await rig()
      assert.equal(r.source.readableFlowing, null)
      const sp = splice(r.source, r.drain, { backend, ...options })
      r.sender.write('01234')
      assert.equal((await readExactly(r.receiver, 5)).toString(), '01234')
      await end(sp)
      assert.equal((await sp.done).reason, ending)
      assert.equal(r.source.readableFlowing, null)
      r.sender.write('56789')
      assert.equal((await dataEvents(r.source, 5)).toString(), '56789')
      r.destroy()
    })
  }

  it('a source paused before the splice stays paused; one flowing before flows again', async () => {
    for (const flowing of [false, true]) {
      const r = await rig()
      if (flowing) r.source.resume()
      else r.source.pause()
      const sp = splice(r.source, r.drain, { backend })
      r.sender.write('hello')
      await readExactly(r.receiver, 5)
      sp.unsplice()
      await sp.done
      assert.equal(r.source.readableFlowing, flowing)
      r.destroy()
    }
  })

  it("resume(), read() or a 'data' listener while spliced takes nothing from the splice: every byte reaches the drain", async () => {
    const r = await rig()
    const data = stream('held')(4 * MiB)
    // Node's buffer full and its reads stopped: taking those bytes first
    // would make Node read again, were it let.
    r.sender.write(data.subarray(0, 256 * KiB))
    assert.ok(await eventually(() => r.source.readableLength >= r.source.readableHighWaterMark))
    const sp = splice(r.source, r.drain, { backend })
    const seen: Buffer[] = []
    r.source.on('data', (d: Buffer) => seen.push(d))
    r.source.resume()
    r.source.read()
    const arriving = readExactly(r.receiver, data.length)
    r.sender.write(data.subarray(256 * KiB))
    assert.deepEqual(digest(await within(arriving, 10000, 'every byte at the drain')), digest(data))
    // Userspace copies through 'data' events, which every listener sees.
    if (backend !== 'userspace') assert.equal(seen.length, 0)
    assert.deepEqual(await sp.unsplice(), { bytes: data.length, reason: 'unsplice' })
    // Handed back, the listener gets what comes next.
    r.sender.write('after')
    assert.ok(await eventually(() => Buffer.concat(seen).toString().endsWith('after')))
    r.destroy()
  })

  it("the sockets' inactivity timeouts see the splice's traffic: none fires while bytes move, both once they stop", async () => {
    const r = await rig()
    const timedOut = new Set<string>()
    r.source.setTimeout(1000, () => timedOut.add('source'))
    r.drain.setTimeout(1000, () => timedOut.add('drain'))
    const sp = splice(r.source, r.drain, { backend })
    const next = stream('timeouts')
    const sent: Buffer[] = []
    // 3 s of traffic, a chunk every 50 ms: three times the timeout.
    for (let i = 0; i < 60; i++) {
      sent.push(next(16 * KiB))
      r.sender.write(sent[sent.length - 1])
      await sleep(50)
    }
    assert.deepEqual([...timedOut], [], 'a timeout fired while bytes were moving')
    assert.ok(await eventually(() => timedOut.size === 2, 5000), `only ${[...timedOut]} timed out once quiet`)
    sp.unsplice()
    assert.deepEqual(await sp.done, { bytes: 60 * 16 * KiB, reason: 'unsplice' })
    assert.deepEqual(digest(await readExactly(r.receiver, 60 * 16 * KiB)), digest(Buffer.concat(sent)))
    r.destroy()
  })

  it('a corked drain is uncorked: what was queued on it goes first, and spliced bytes flow at once', async () => {
    const r = await rig()
    r.drain.cork()
    r.drain.write('queued')
    const sp = splice(r.source, r.drain, { backend })
    assert.equal(r.drain.writableCorked, 0)
    const data = stream('corked')(MiB)
    r.sender.write(data)
    assert.deepEqual(digest(await readExactly(r.receiver, 6 + MiB)), digest(Buffer.concat([Buffer.from('queued'), data])))
    r.sender.end()
    assert.deepEqual(await sp.done, { bytes: MiB, reason: 'eof' })
    r.destroy()
  })

  it('a source whose EOF Node already holds: its buffered bytes, then eof', async () => {
    const r = await rig()
    const data = stream('held-eof')(1000)
    r.sender.end(data)
    const state = (r.source as unknown as { _readableState: { ended: boolean } })._readableState
    assert.ok(await eventually(() => state.ended), 'Node did not read the EOF')
    const received = receive(r.receiver)
    const sp = splice(r.source, r.drain, { backend })
    assert.deepEqual(await sp.done, { bytes: 1000, reason: 'eof' })
    assert.deepEqual(await received, digest(data))
    r.destroy()
  })

  it('a drain ended from outside while spliced: error EPIPE, and the count is what its peer received', async () => {
    // Half-open, so that the drain's peer does not answer the FIN by closing.
    const r = await rig({ allowHalfOpen: true })
    const received = receive(r.receiver)
    const sp = splice(r.source, r.drain, { backend })
    const first = stream('ended-drain')(64 * KiB)
    r.sender.write(first)
    assert.ok(await eventually(() => sp.bytes === first.length))
    r.drain.end()
    await received
    r.sender.write(stream('ended-drain-more')(64 * KiB))
    const result = await sp.done
    assert.equal(result.reason, 'error')
    assert.equal((result.error as NodeJS.ErrnoException).code, 'EPIPE')
    assert.deepEqual(await received, digest(first))
    assert.equal(result.bytes, first.length)
    r.destroy()
  })

  it('Unix-domain stream sockets: one way and both ways, every byte', async () => {
    const r = await rig({ unix: true })
    const received = receive(r.receiver)
    const sp = splice(r.source, r.drain, { backend })
    const sent = await send(r.sender, 'unix', 16 * MiB)
    assert.deepEqual(await sp.done, { bytes: 16 * MiB, reason: 'eof' })
    assert.deepEqual(await received, sent)
    r.destroy()

    const [client, a] = await unixSocketPair({ allowHalfOpen: true })
    const [b, server] = await unixSocketPair({ allowHalfOpen: true })
    const proxied = proxy(a, b, { backend })
    const atServer = receive(server)
    const atClient = receive(client)
    const [up, down] = await Promise.all([send(client, 'unix-up', 8 * MiB), send(server, 'unix-down', 8 * MiB)])
    assert.deepEqual(await atServer, up)
    assert.deepEqual(await atClient, down)
    const result = await proxied
    assert.deepEqual(result, { aToB: { bytes: 8 * MiB, reason: 'eof' }, bToA: { bytes: 8 * MiB, reason: 'eof' } })
    for (const s of [client, a, b, server]) s.destroy()
  })
})
