import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import { type BackendName, proxy } from '../lib/index.js'
import { native } from '../lib/native.js'

// A proxy in a process of its own, for the scale test: every connection is
// proxied to the given port, and on 'measure' it reports over IPC what it
// holds (descriptors, memory, live connections, the engine's own counts).

const [backend, targetPort] = process.argv.slice(2)
let live = 0

const server = net.createServer({ allowHalfOpen: true }, client => {
  live++
  const upstream = net.connect({ port: Number(targetPort), host: '127.0.0.1', allowHalfOpen: true })
  for (const s of [client, upstream]) s.on('error', () => {})
  proxy(client, upstream, { backend: backend as BackendName }).then(() => {
    for (const s of [client, upstream]) s.end(() => s.destroy())
  })
  Promise.all([client, upstream].map(s => s.closed ? undefined : once(s, 'close'))).then(() => live--)
})

process.on('message', () => {
  globalThis.gc?.()
  process.send!({
    live,
    // Less those the engine keeps for itself (workers, pooled pipes), as helpers.openFds.
    fds: fs.readdirSync('/proc/self/fd').length - (native?.stats().descriptors ?? 0),
    rss: process.memoryUsage().rss,
    engine: native?.stats() ?? null
  })
})
server.listen(0, '127.0.0.1', 4096, () => process.send!({ port: (server.address() as net.AddressInfo).port }))
process.on('disconnect', () => process.exit(0))
