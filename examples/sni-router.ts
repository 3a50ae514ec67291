// A TLS passthrough router: read the ClientHello, choose a backend by the
// server name in it (SNI), replay what was read to that backend as its first
// bytes, then splice. The TLS session is the client's and the backend's: no
// key or certificate here.
import net from 'node:net'
import { proxy } from '../lib/index.js'

const helloTimeout = 10_000 // ms a client has to send its ClientHello
const helloMax = 64 << 10 // bytes read for it at most

export function sniRouter (routes: Map<string, { host: string, port: number }>): net.Server {
  return net.createServer({ allowHalfOpen: true }, client => {
    let read = Buffer.alloc(0)
    client.on('error', () => {})
    client.setTimeout(helloTimeout, () => client.destroy())
    const onData = (data: Buffer) => {
      read = Buffer.concat([read, data])
      const name = serverName(read)
      if (name === undefined && read.length < helloMax) return // more to come
      // Node has no MSG_PEEK: what was read is written to the backend first,
      // and anything Node reads after the pause is handed over by proxy().
      client.off('data', onData).pause().setTimeout(0)
      const backend = name ? routes.get(name) : undefined
      if (!backend) return client.destroy()
      const upstream = net.connect({ ...backend, allowHalfOpen: true })
      upstream.on('error', () => client.destroy())
      upstream.write(read)
      proxy(client, upstream).then(({ aToB, bToA }) => {
        if (aToB.reason !== 'eof' || bToA.reason !== 'eof') {
          client.destroy()
          upstream.destroy()
        }
      })
    }
    client.on('data', onData)
  })
}

/**
 * The server name a TLS ClientHello asks for: undefined while `data` holds
 * only part of it, '' when it is not a ClientHello or names no server.
 */
export function serverName (data: Buffer): string | undefined {
  // The handshake message, from as many handshake records as it spans.
  let hello = Buffer.alloc(0)
  for (let at = 0; hello.length < 4 || hello.length < 4 + hello.readUIntBE(1, 3);) {
    if (data.length < at + 5) return undefined
    if (data[at] !== 22) return '' // not a handshake record
    const end = at + 5 + data.readUInt16BE(at + 3)
    if (data.length < end) return undefined
    hello = Buffer.concat([hello, data.subarray(at + 5, end)])
    at = end
  }
  if (hello[0] !== 1) return '' // not a ClientHello
  try {
    let p = 4 + 2 + 32 // message type and length, version, random
    p += 1 + hello[p] // session id
    p += 2 + hello.readUInt16BE(p) // cipher suites
    p += 1 + hello[p] // compression methods
    const end = p + 2 + hello.readUInt16BE(p)
    for (p += 2; p + 4 <= end; p += 4 + hello.readUInt16BE(p + 2)) {
      if (hello.readUInt16BE(p) !== 0) continue // not server_name
      // A list (length, 2 bytes) of entries: type (0, a host name), length, name.
      const size = hello.readUInt16BE(p + 7)
      if (hello[p + 6] !== 0 || p + 9 + size > hello.length) return ''
      return hello.toString('latin1', p + 9, p + 9 + size).toLowerCase()
    }
  } catch {} // a length past the end
  return ''
}
