// An HTTP forward proxy for CONNECT tunnels (what `curl -p -x` and browsers
// use for HTTPS through a proxy): answer 200, then splice both ways.
import http from 'node:http'
import net from 'node:net'
import { proxy } from '../lib/index.js'

/** Runs a tunnel whose upstream has connected and whose 200 is queued. */
export type Tunnel = (client: net.Socket, upstream: net.Socket, target: string) => void

/** Splices both ways; an end other than EOF both ways closes both sockets. */
function spliceTunnel (client: net.Socket, upstream: net.Socket): void {
  upstream.on('error', () => client.destroy())
  proxy(client, upstream).then(({ aToB, bToA }) => {
    if (aToB.reason !== 'eof' || bToA.reason !== 'eof') {
      client.destroy()
      upstream.destroy()
    }
  })
}

export function connectProxy (tunnel: Tunnel = spliceTunnel,
  refused: (client: net.Socket, target: string, err: Error) => void = () => {}): http.Server {
  const server = http.createServer((_req, res) => res.writeHead(405).end())
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    // host:port or [v6]:port; anything else, and port 0, is a bad request.
    const [, v6, name, port] = /^(?:\[([\da-f:.]+)\]|([^\s:[\]/]+)):(\d{1,5})$/i.exec(req.url ?? '') ?? []
    if (!port || Number(port) < 1 || Number(port) > 65535) {
      client.end('HTTP/1.1 400 Bad Request\r\n\r\n')
      return
    }
    const target = req.url!
    const upstream = net.connect({ host: v6 ?? name, port: Number(port), allowHalfOpen: true })
    client.on('error', () => upstream.destroy())
    const refuse = (err: Error) => {
      client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n')
      refused(client, target, err)
    }
    upstream.once('error', refuse)
    upstream.once('connect', () => {
      upstream.off('error', refuse)
      if (client.destroyed) return upstream.destroy()
      // Written before the splice, so they go first: the answer to the
      // client, and to the server whatever the client sent after its request
      // (`head`: dropping it loses the first bytes of the tunnel).
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      upstream.write(head)
      tunnel(client, upstream, target)
    })
  })
  return server
}
