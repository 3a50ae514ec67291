import net from 'node:net'
import { parseSize } from './args.js'
import { proxy } from '../proxy.js'

// The proxy under test, in a process of its own so that its CPU time is
// measured apart from the peers'. Started by bench.ts with the case and the
// receiving peer's port. IPC: it sends {port} once listening; 'begin' starts
// the CPU count (answered with {}), 'end' answers {cpu} since 'begin'.
// A case named BACKEND-after-SIZE copies SIZE bytes in JavaScript first;
// `default` is proxy() with no options.

const [name, targetPort] = process.argv.slice(2)
const [, mode, after] = /^(.+)-after-(.+)$/.exec(name) ?? [, name]
const spliceAfter = after === undefined ? 0 : parseSize('spliceAfter', after)

const server = net.createServer({ allowHalfOpen: true }, client => {
  const upstream = net.connect({ port: Number(targetPort), host: '127.0.0.1', allowHalfOpen: true })
  for (const s of [client, upstream]) s.on('error', () => {})
  if (mode === 'node-pipe') {
    // What users write today.
    client.pipe(upstream)
    upstream.pipe(client)
  } else {
    const options = mode === 'default' ? undefined : { backend: mode as 'pipe', spliceAfter }
    // Ended both ways, each socket closes itself once its FIN is out, as
    // with pipe(); destroying it at once would close it before the FIN.
    proxy(client, upstream, options).then(({ aToB, bToA }) => {
      if (aToB.reason === 'eof' && bToA.reason === 'eof') return
      client.destroy()
      upstream.destroy()
    })
  }
})

let begun: NodeJS.CpuUsage | undefined
process.on('message', message => {
  if (message === 'begin') {
    begun = process.cpuUsage()
    process.send!({})
  } else if (message === 'end') {
    process.send!({ cpu: process.cpuUsage(begun) })
  }
})
server.listen(0, '127.0.0.1', 1024, () => process.send!({ port: (server.address() as net.AddressInfo).port }))
process.on('disconnect', () => process.exit(0))
