import net from 'node:net'
import { proxy } from './proxy.js'

// The proxy under test, in a process of its own so that its CPU time is
// measured apart from the sender's and receiver's. Started by bench.ts with
// the mode and the receiver's port; answers over IPC.

const [mode, targetPort] = process.argv.slice(2)

const server = net.createServer({ allowHalfOpen: true }, client => {
  const cpu = process.cpuUsage()
  const upstream = net.connect({ port: Number(targetPort), host: '127.0.0.1', allowHalfOpen: true })
  const report = () => process.send!({ cpu: process.cpuUsage(cpu) })
  if (mode === 'node-pipe') {
    // What users write today.
    client.pipe(upstream)
    upstream.pipe(client)
    let closed = 0
    for (const s of [client, upstream]) s.on('close', () => { if (++closed === 2) report() })
  } else {
    proxy(client, upstream, { backend: mode as 'pipe' }).then(() => {
      client.destroy()
      upstream.destroy()
      report()
    })
  }
})
server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as net.AddressInfo).port }))
process.on('disconnect', () => process.exit(0))
