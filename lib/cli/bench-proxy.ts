import { once } from 'node:events'
import net from 'node:net'
import { parseSize } from './args.js'
import { serve } from './bench-child.js'
import { proxy } from '../proxy.js'

// The proxy under test, in a process of its own (bench-child.ts). Started
// by bench-runner.ts with the case and the receiving peer's port. Before it
// listens it warms its own code up (warmUp).
// A case named BACKEND-after-SIZE copies SIZE bytes in JavaScript first;
// `default` is proxy() with no options.

const [name, targetPort] = process.argv.slice(2)
const [, mode, after] = /^(.+)-after-(.+)$/.exec(name) ?? [, name]
const spliceAfter = after === undefined ? 0 : parseSize('spliceAfter', after)

/** The case's proxy: each connection relayed to `port`. */
function proxyTo (port: number): net.Server {
  return net.createServer({ allowHalfOpen: true }, client => {
    const upstream = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
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
}

async function listen (server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1', 1024)
  await once(server, 'listening')
  return (server.address() as net.AddressInfo).port
}

/**
 * Relays `count` short 1 KiB exchanges, 16 at a time, through a proxy of
 * this case to an echo server of its own, before any measurement: the
 * figures are then of warm code, as in a server that has been running.
 */
async function warmUp (count: number): Promise<void> {
  const echo = net.createServer({ allowHalfOpen: true }, s => s.pipe(s))
  const front = proxyTo(await listen(echo))
  const port = await listen(front)
  const message = Buffer.alloc(1024, 0x5a)
  let left = count
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (left-- > 0) {
      const s = net.connect({ port, host: '127.0.0.1' })
      s.end(message)
      s.resume()
      await once(s, 'end')
      s.destroy()
    }
  }))
  front.close()
  echo.close()
}

serve(warmUp(1000).then(() => listen(proxyTo(Number(targetPort)))))
