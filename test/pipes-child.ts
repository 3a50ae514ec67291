import assert from 'node:assert/strict'
import { once } from 'node:events'
import net from 'node:net'
import { splice } from '../lib/index.js'
import { native } from '../lib/native.js'
import { receive, send, sleep } from './helpers.js'

// Run by pipes.test.ts as an unprivileged user, whom the kernel holds to
// fs.pipe-user-pages-soft: COUNT concurrent bulk splices through the pipe
// backend, every byte checked. Reports the engine's stats while every
// splice holds bytes, and at the end.

const COUNT = Number(process.argv[2] ?? 1000)
const KiB = 1024

async function main () {
  // Unix sockets: their buffers are small (about 200 KiB), while a TCP
  // connection over loopback buffers some 4 MiB.
  const sinkPath = `\0sosplice-pipes-${process.pid}-sink`
  const frontPath = `\0sosplice-pipes-${process.pid}-front`
  // A Unix socket's connect() fails with EAGAIN once the backlog is full.
  const sink = net.createServer().listen({ path: sinkPath, backlog: 2 * COUNT })
  const front = net.createServer().listen({ path: frontPath, backlog: 2 * COUNT })
  await Promise.all([once(sink, 'listening'), once(front, 'listening')])
  // Receivers that do not read yet, so that every splice holds a pipe with
  // bytes in it: the many slow clients of a busy proxy.
  const receivers: net.Socket[] = []
  sink.on('connection', s => {
    s.pause()
    receivers.push(s)
  })
  const ends: Promise<string>[] = []
  front.on('connection', source => {
    const drain = net.connect(sinkPath)
    ends.push(splice(source, drain, { backend: 'pipe' }).done.then(result => {
      source.destroy()
      drain.destroy()
      return result.reason
    }))
  })
  const senders = Array.from({ length: COUNT }, () => net.connect(frontPath))
  await Promise.all(senders.map(s => once(s, 'connect')))
  while (ends.length < COUNT || receivers.length < COUNT) await sleep(10)
  // More than the socket buffers on the way hold, all sizes different, so
  // that each is found by its length.
  const sending = Promise.all(senders.map((s, i) => send(s, `pipes-${i}`, 512 * KiB + 256 * i)))
  // Until the pipes held stop changing: every buffer on the way is full.
  let held = native!.stats()
  for (let still = 0; still < 20; await sleep(50)) {
    const now = native!.stats()
    still = now.pipes === held.pipes ? still + 1 : 0
    held = now
  }
  const received = receivers.map(s => {
    const digest = receive(s)
    s.resume()
    return digest
  })
  const sent = await sending
  const reasons = await Promise.all(ends)
  const got = new Map((await Promise.all(received)).map(d => [d.length, d]))
  assert.deepEqual(new Set(reasons), new Set(['eof']))
  for (const d of sent) assert.deepEqual(got.get(d.length), d)
  for (const s of senders) s.destroy()
  sink.close()
  front.close()
  console.log(JSON.stringify({ uid: process.getuid!(), count: COUNT, bytes: sent.reduce((n, d) => n + d.length, 0), held, end: native!.stats() }))
}

main().catch(err => {
  console.error(err)
  process.exit(1)
})
