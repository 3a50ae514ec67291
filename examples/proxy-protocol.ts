// A TCP proxy that tells its backend who the client is with a PROXY
// protocol header (HAProxy's, v1 text or v2 binary), then splices.
import net from 'node:net'
import { proxy } from '../lib/index.js'

export function proxyProtocolProxy (backend: { host: string, port: number }, version: 1 | 2): net.Server {
  return net.createServer({ allowHalfOpen: true }, client => {
    // Reset before it could be looked at: no address for the header.
    if (client.remoteAddress === undefined) return client.destroy()
    const upstream = net.connect({ ...backend, allowHalfOpen: true })
    client.on('error', () => upstream.destroy())
    upstream.on('error', () => client.destroy())
    // Queued before the splice, so the header reaches the backend first.
    upstream.write(proxyHeader(client, version))
    proxy(client, upstream).then(({ aToB, bToA }) => {
      if (aToB.reason !== 'eof' || bToA.reason !== 'eof') {
        client.destroy()
        upstream.destroy()
      }
    })
  })
}

/** The header for a connection from the client's address to ours. */
export function proxyHeader (client: net.Socket, version: 1 | 2): Buffer {
  // An IPv4 client of a dual-stack server shows as ::ffff:a.b.c.d.
  const unmapped = (a: string) => a.replace(/^::ffff:(?=\d+\.)/, '')
  const src = unmapped(client.remoteAddress!)
  const dst = unmapped(client.localAddress!)
  const v6 = src.includes(':')
  if (version === 1) {
    return Buffer.from(`PROXY ${v6 ? 'TCP6' : 'TCP4'} ${src} ${dst} ${client.remotePort} ${client.localPort}\r\n`)
  }
  const addresses = v6
    ? Buffer.concat([ipv6(src), ipv6(dst), ports(client)])
    : Buffer.concat([Buffer.from(src.split('.').map(Number)), Buffer.from(dst.split('.').map(Number)), ports(client)])
  const head = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // signature
    0x21, // version 2, PROXY
    v6 ? 0x21 : 0x11, // TCP over IPv6 or IPv4
    0, addresses.length])
  return Buffer.concat([head, addresses])
}

function ports (client: net.Socket): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt16BE(client.remotePort!, 0)
  b.writeUInt16BE(client.localPort!, 2)
  return b
}

function ipv6 (address: string): Buffer {
  const [head, tail = ''] = address.split('::')
  const parts = (s: string) => (s ? s.split(':') : [])
  const groups = [...parts(head), ...Array(8 - parts(head).length - parts(tail).length).fill('0'), ...parts(tail)]
  return Buffer.from(groups.flatMap(g => [parseInt(g, 16) >> 8, parseInt(g, 16) & 0xff]))
}
