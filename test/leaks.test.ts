import assert from 'node:assert/strict'
import { once } from 'node:events'
import net from 'node:net'
import { splice } from '../lib/index.js'
import { assertNoLeaks, eachBackend, eventually, receive, send, steadyFds } from './helpers.js'

const COUNT = 500

eachBackend('500 concurrent splices', backend => {
  it('all complete with exact bytes, then no descriptor, pipe or splice is left', async () => {
    const before = await steadyFds(backend)
    const sink = net.createServer()
    const front = net.createServer()
    sink.listen(0, '127.0.0.1')
    front.listen(0, '127.0.0.1')
    await Promise.all([once(sink, 'listening'), once(front, 'listening')])
    const sinkPort = (sink.address() as net.AddressInfo).port
    const frontPort = (front.address() as net.AddressInfo).port
    const received: Promise<{ length: number, sha256: string }>[] = []
    sink.on('connection', s => received.push(receive(s)))
    const splices: Promise<unknown>[] = []
    front.on('connection', source => {
      const drain = net.connect(sinkPort, '127.0.0.1')
      splices.push(splice(source, drain, { backend }).done.then(result => {
        drain.destroy()
        source.destroy()
        return result
      }))
    })
    const senders = Array.from({ length: COUNT }, () => net.connect(frontPort, '127.0.0.1'))
    await Promise.all(senders.map(s => once(s, 'connect')))
    const sent = await Promise.all(senders.map((s, i) => send(s, `conn-${i}`, 64 * 1024 + i)))
    await eventually(() => splices.length === COUNT && received.length === COUNT, 20000)
    const results = await Promise.all(splices)
    const got = await Promise.all(received)
    for (const result of results) assert.equal((result as { reason: string }).reason, 'eof')
    const byLength = new Map(got.map(d => [d.length, d]))
    for (const d of sent) assert.deepEqual(byLength.get(d.length), d)
    for (const s of senders) s.destroy()
    sink.close()
    front.close()
    await assertNoLeaks(before)
  })
})
