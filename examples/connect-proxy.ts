// An HTTP forward proxy for CONNECT tunnels (what `curl -p -x` and browsers
// use for HTTPS through a proxy): answer 200, then splice both ways.
import http from 'node:http'
import net from 'node:net'
import { proxy } from '../lib/index.js'

export function connectProxy (): http.Server {
  const server = http.createServer((_req, res) => res.writeHead(405).end())
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const { hostname, port } = new URL(`http://${req.url}`)
    const upstream = net.connect({ host: hostname.replace(/^\[|\]$/g, ''), port: Number(port), allowHalfOpen: true })
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroyed || client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n'))
    upstream.once('connect', () => {
      // Written before the splice, so they go first: the answer to the
      // client, and to the server whatever the client sent after its request
      // (`head`: dropping it loses the first bytes of the tunnel).
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      upstream.write(head)
      proxy(client, upstream).then(({ aToB, bToA }) => {
        if (aToB.reason !== 'eof' || bToA.reason !== 'eof') {
          client.destroy()
          upstream.destroy()
        }
      })
    })
  })
  return server
}
