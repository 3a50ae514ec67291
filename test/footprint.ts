import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import { backends, splice } from '../lib/index.js'
import { sleep } from './helpers.js'

// `node --expose-gc dist/test/footprint.js [N]`: what a splice costs.
// - N one-way splices on the host's best backend, from the first byte (with
//   default options they would start in JavaScript), idle and then active (their
//   drains' peers do not read, so every splice holds bytes in flight):
//   descriptors per splice, and RSS per idle splice.
// - On every backend, splices started and ended per second for 1 KiB
//   transfers (max: 1024) on 64 established connections, with CPU per splice.

const count = Number(process.argv[2] ?? 2000)
const fds = () => fs.readdirSync('/proc/self/fd').length
const rss = () => { globalThis.gc?.(); return process.memoryUsage().rss }

async function pair (server: net.Server): Promise<[net.Socket, net.Socket]> {
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  const [peer] = await once(server, 'connection') as [net.Socket]
  if (client.connecting) await once(client, 'connect')
  return [client, peer]
}

async function main () {
  const server = net.createServer().listen(0, '127.0.0.1')
  await once(server, 'listening')
  const rigs = []
  for (let i = 0; i <= count; i++) {
    const [sender, source] = await pair(server)
    const [drain, receiver] = await pair(server)
    receiver.pause()
    rigs.push({ sender, source, drain })
  }
  // One splice first, so that the engine's workers are in the baseline.
  const first = rigs.pop()!
  const options = { backend: backends()[0] }
  const warm = splice(first.source, first.drain, options)
  warm.unsplice()
  await warm.done
  await sleep(200)
  const before = { fds: fds(), rss: rss() }
  const splices = rigs.map(r => splice(r.source, r.drain, options))
  await sleep(500)
  const idle = { fds: fds(), rss: rss() }
  const chunk = Buffer.alloc(64 << 10)
  for (const r of rigs) for (let i = 0; i < 64; i++) r.sender.write(chunk)
  await sleep(3000)
  const active = fds()
  const per = (n: number) => ((n - before.fds) / count).toFixed(2)
  console.log(`${count} splices, backend ${splices[0].backend}`)
  console.log(`idle:   ${per(idle.fds)} descriptors, ${((idle.rss - before.rss) / count / 1024).toFixed(2)} KiB RSS per splice`)
  // The senders' queued writes are in this process too: RSS says nothing here.
  console.log(`active: ${per(active)} descriptors per splice; its pipe's buffer is kernel memory`)
  for (const s of splices) s.unsplice()
  await Promise.all(splices.map(s => s.done))
  for (const r of [...rigs, first]) for (const s of Object.values(r)) s.destroy()

  const cycling = []
  for (let i = 0; i < 64; i++) {
    const [sender, source] = await pair(server)
    const [drain, receiver] = await pair(server)
    receiver.resume()
    cycling.push({ sender, source, drain })
  }
  const message = Buffer.alloc(1024, 7)
  for (const backend of backends()) {
    let n = 0
    const started = process.hrtime.bigint()
    const cpu = process.cpuUsage()
    const until = Date.now() + 3000
    await Promise.all(cycling.map(async ({ sender, source, drain }) => {
      while (Date.now() < until) {
        const sp = splice(source, drain, { backend, max: message.length })
        sender.write(message)
        if ((await sp.done).bytes !== message.length) throw new Error('a cycle moved the wrong count')
        n++
      }
    }))
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    const { user, system } = process.cpuUsage(cpu)
    console.log(`${backend}: ${Math.round(n / seconds)} splices/s started and ended (1 KiB each, 64 at a time), ` +
      `${(user / n).toFixed(0)} us user + ${(system / n).toFixed(0)} us sys CPU per splice`)
  }
  process.exit(0)
}

main()
