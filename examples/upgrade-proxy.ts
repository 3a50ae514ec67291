// WebSocket (or any HTTP Upgrade) pass-through: forward the request to a
// backend as it came, then splice both ways; the backend's 101 answer and
// every frame after it go through the splice.
import http from 'node:http'
import net from 'node:net'
import { proxy } from '../lib/index.js'

export function upgradeProxy (backend: { host: string, port: number }): http.Server {
  const server = http.createServer((_req, res) => res.writeHead(426).end())
  server.on('upgrade', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    const upstream = net.connect({ ...backend, allowHalfOpen: true })
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
    // rawHeaders keeps the names, their order and repeats as the client sent
    // them. Queued before the splice, so they reach the backend first, then
    // what the client sent after its request (`head`: dropping it loses the
    // first frames).
    let request = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`
    for (let i = 0; i < req.rawHeaders.length; i += 2) request += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`
    upstream.write(`${request}\r\n`)
    upstream.write(head)
    proxy(client, upstream).then(({ aToB, bToA }) => {
      if (aToB.reason !== 'eof' || bToA.reason !== 'eof') {
        client.destroy()
        upstream.destroy()
      }
    })
  })
  return server
}
