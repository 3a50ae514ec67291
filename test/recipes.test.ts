// The recipes in examples/, each driven by a client nobody here wrote
// (curl; Node's own http CONNECT client; the ws package's WebSocket client
// and server), every byte checked each way.
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import { Duplex } from 'node:stream'
import tls from 'node:tls'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { WebSocket, WebSocketServer } from 'ws'
import { connectProxy } from '../examples/connect-proxy.js'
import { proxyProtocolProxy } from '../examples/proxy-protocol.js'
import { sniRouter } from '../examples/sni-router.js'
import { upgradeProxy } from '../examples/upgrade-proxy.js'
import { digest, readExactly, receive, send, stream } from './helpers.js'

const MiB = 1 << 20

// The tools run as themselves, without the sanitizer runtimes that
// `npm run test:asan` preloads into Node (curl hangs with them).
const env = { ...process.env }
delete env.LD_PRELOAD

/** What is missing of the commands a test drives ('' if nothing). */
function missing (...commands: [string, string][]): string {
  return commands.filter(([command, arg]) => {
    try {
      execFileSync(command, [arg], { stdio: 'ignore', env })
      return false
    } catch {
      return true
    }
  }).map(([command]) => command).join(' and ')
}

// .ci/run installs both from Debian's packages.
const noTls = missing(['curl', '--version'], ['openssl', 'version'])

/** A self-signed certificate for `names`, made by openssl: key.pem and cert.pem in `dir`. */
function certificate (dir: string, names: string[]): void {
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', `/CN=${names[0]}`,
    '-addext', `subjectAltName=${names.map(n => `DNS:${n}`).join(',')}`,
    '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')], { stdio: 'ignore', env })
}

/**
 * An HTTPS server with dir's certificate that answers each request with the
 * sha256 of its body (x-upload-sha256), `headers`, and `download`.
 */
function hashingServer (dir: string, download: Buffer, headers: http.OutgoingHttpHeaders = {}): https.Server {
  return https.createServer({
    key: fs.readFileSync(path.join(dir, 'key.pem')),
    cert: fs.readFileSync(path.join(dir, 'cert.pem'))
  }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (d: Buffer) => chunks.push(d))
    req.on('end', () => res.writeHead(200, {
      ...headers,
      'x-upload-sha256': digest(Buffer.concat(chunks)).sha256,
      'content-length': download.length
    }).end(download))
  })
}

async function listen (server: net.Server, host = '127.0.0.1'): Promise<number> {
  server.listen(0, host)
  await once(server, 'listening')
  return (server.address() as net.AddressInfo).port
}

function echoServer (): net.Server {
  return net.createServer({ allowHalfOpen: true }, s => {
    s.on('error', () => {})
    s.pipe(s)
  })
}

describe('recipe: a CONNECT proxy (examples/connect-proxy.ts)', () => {
  let proxyServer: http.Server
  let proxyPort = 0
  before(async () => {
    proxyServer = connectProxy()
    proxyPort = await listen(proxyServer)
  })
  after(() => proxyServer.close())

  it(`curl -p -x reaches a local HTTPS server through it: 1 MiB up, 2 MiB down, every byte${noTls ? ` (skipped: no ${noTls})` : ''}`, async function () {
    if (noTls) this.skip()
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sosplice-connect-'))
    certificate(dir, ['localhost'])
    const upload = stream('connect-up')(MiB)
    const download = stream('connect-down')(2 * MiB)
    fs.writeFileSync(path.join(dir, 'up.bin'), upload)
    const server = hashingServer(dir, download)
    // Dual-stack: the proxy may resolve localhost to ::1 or 127.0.0.1.
    const port = await listen(server, '::')
    try {
      const { stdout } = await promisify(execFile)('curl', ['-sS', '-p', '-x', `http://127.0.0.1:${proxyPort}`,
        '--cacert', path.join(dir, 'cert.pem'), '--data-binary', `@${path.join(dir, 'up.bin')}`,
        '-D', path.join(dir, 'headers'), '-o', path.join(dir, 'down.bin'), `https://localhost:${port}/`], { env })
      assert.equal(stdout, '')
      const headers = fs.readFileSync(path.join(dir, 'headers'), 'latin1')
      assert.match(headers, /^HTTP\/1.1 200 Connection Established/)
      assert.match(headers, new RegExp(`x-upload-sha256: ${digest(upload).sha256}`))
      assert.deepEqual(digest(fs.readFileSync(path.join(dir, 'down.bin'))), digest(download))
    } finally {
      server.close()
      fs.rmSync(dir, { recursive: true })
    }
  })

  it("Node's CONNECT client reaches a plain TCP echo: 4 MiB each way", async () => {
    const echo = echoServer()
    const echoPort = await listen(echo)
    try {
      const req = http.request({ host: '127.0.0.1', port: proxyPort, method: 'CONNECT', path: `127.0.0.1:${echoPort}` })
      req.end()
      const [res, tunnel] = await once(req, 'connect') as [http.IncomingMessage, net.Socket]
      assert.equal(res.statusCode, 200)
      const back = receive(tunnel)
      const sent = await send(tunnel, 'connect-echo', 4 * MiB)
      assert.deepEqual(await back, sent)
      tunnel.destroy()
    } finally {
      echo.close()
    }
  })

  it('bytes the client sent right after its request (head) reach the server first', async () => {
    const echo = echoServer()
    const echoPort = await listen(echo)
    try {
      const client = net.connect(proxyPort, '127.0.0.1')
      const early = stream('connect-head')(1000)
      // One write: the request and the first tunnel bytes arrive together.
      client.write(Buffer.concat([Buffer.from(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: x\r\n\r\n`), early]))
      const answer = 'HTTP/1.1 200 Connection Established\r\n\r\n'
      assert.equal((await readExactly(client, answer.length)).toString(), answer)
      assert.deepEqual(digest(await readExactly(client, early.length)), digest(early))
      client.destroy()
    } finally {
      echo.close()
    }
  })

  it('a target that is not host:port gets 400, one that cannot be reached 502; the proxy goes on', async () => {
    const closed = net.createServer()
    const closedPort = await listen(closed)
    closed.close()
    for (const [target, status] of [['no-port', 400], ['127.0.0.1:0', 400], ['[::1:80', 400], [`127.0.0.1:${closedPort}`, 502]] as const) {
      const client = net.connect(proxyPort, '127.0.0.1')
      client.write(`CONNECT ${target} HTTP/1.1\r\nHost: x\r\n\r\n`)
      const chunks: Buffer[] = []
      client.on('data', (d: Buffer) => chunks.push(d))
      await once(client, 'end')
      assert.match(Buffer.concat(chunks).toString(), new RegExp(`^HTTP/1.1 ${status} `), target)
      client.destroy()
    }
  })
})

/** A backend that parses a PROXY protocol header, then echoes. */
function proxyProtocolBackend (seen: (header: { src: string, srcPort: number, dstPort: number }) => void): net.Server {
  return net.createServer({ allowHalfOpen: true }, async s => {
    s.on('error', () => {})
    const first = await readExactly(s, 16)
    let header
    if (first.subarray(0, 6).toString() === 'PROXY ') {
      let line = first.toString('latin1')
      while (!line.includes('\r\n')) line += (await readExactly(s, 1)).toString('latin1')
      const [, , src, , srcPort, dstPort] = line.trim().split(' ')
      header = { src, srcPort: Number(srcPort), dstPort: Number(dstPort) }
    } else {
      assert.deepEqual(first.subarray(0, 12), Buffer.from('0d0a0d0a000d0a515549540a', 'hex'))
      assert.equal(first[12], 0x21)
      const body = await readExactly(s, first.readUInt16BE(14))
      const v6 = first[13] === 0x21
      const n = v6 ? 16 : 4
      const src = v6 ? ipv6Text(body.subarray(0, 16)) : [...body.subarray(0, 4)].join('.')
      header = { src, srcPort: body.readUInt16BE(2 * n), dstPort: body.readUInt16BE(2 * n + 2) }
    }
    seen(header)
    s.pipe(s)
  })
}

/** An IPv6 address as Node writes it (the first run of zero groups as ::). */
function ipv6Text (b: Buffer): string {
  const groups = Array.from({ length: 8 }, (_, i) => b.readUInt16BE(2 * i).toString(16)).join(':')
  return groups.replace(/(^|:)0(:0)+(:|$)/, '::')
}

describe('recipe: a TCP proxy sending a PROXY protocol header (examples/proxy-protocol.ts)', () => {
  for (const version of [1, 2] as const) {
    for (const host of ['127.0.0.1', '::1']) {
      it(`v${version}, client on ${host}: the backend learns the client's address, then 2 MiB each way`, async () => {
        let header: { src: string, srcPort: number, dstPort: number } | undefined
        const backend = proxyProtocolBackend(h => { header = h })
        const front = proxyProtocolProxy({ host: '127.0.0.1', port: await listen(backend) }, version)
        const frontPort = await listen(front, '::')
        try {
          const client = net.connect(frontPort, host)
          await once(client, 'connect')
          const { localPort } = client
          const back = receive(client)
          const sent = await send(client, `pp-${version}-${host}`, 2 * MiB)
          assert.deepEqual(await back, sent)
          assert.deepEqual(header, { src: host, srcPort: localPort, dstPort: frontPort })
          client.destroy()
        } finally {
          front.close()
          backend.close()
        }
      })
    }
  }
})

/**
 * A WebSocket backend (the ws package). On /exchange it hashes the binary
 * messages it gets until a text 'end', answers with their digest, then sends
 * `down` in 128 KiB messages and 'end'; on /echo it echoes every message.
 */
function webSocketBackend (down: Buffer, seen: (url: string, header: string | undefined) => void): http.Server {
  const server = http.createServer()
  new WebSocketServer({ server }).on('connection', (ws, req) => {
    seen(req.url!, req.headers['x-recipe'] as string | undefined)
    if (req.url === '/echo') return ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
    const got: Buffer[] = []
    ws.on('message', (data: Buffer, isBinary) => {
      if (isBinary) return got.push(data)
      ws.send(JSON.stringify(digest(Buffer.concat(got))))
      for (let at = 0; at < down.length; at += 128 << 10) ws.send(down.subarray(at, at + (128 << 10)))
      ws.send('end')
    })
  })
  return server
}

describe('recipe: WebSocket pass-through (examples/upgrade-proxy.ts)', () => {
  const download = stream('ws-down')(2 * MiB)
  let seen: [string, string | undefined][] = []
  let backend: http.Server
  let front: http.Server
  let frontPort = 0
  before(async () => {
    backend = webSocketBackend(download, (url, header) => seen.push([url, header]))
    front = upgradeProxy({ host: '127.0.0.1', port: await listen(backend) })
    frontPort = await listen(front)
  })
  beforeEach(() => { seen = [] })
  after(() => {
    front.close()
    backend.close()
  })

  it('a WebSocket client and server exchange 2 MiB each way through it, the request as sent', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${frontPort}/exchange`, { headers: { 'x-recipe': 'upgrade' } })
    await once(ws, 'open')
    const got: Buffer[] = []
    let answer = ''
    const ended = new Promise<void>(resolve => ws.on('message', (data: Buffer, isBinary) => {
      if (isBinary) got.push(data)
      else if (!answer) answer = data.toString()
      else resolve()
    }))
    const upload = stream('ws-up')(2 * MiB)
    for (let at = 0; at < upload.length; at += 64 << 10) ws.send(upload.subarray(at, at + (64 << 10)))
    ws.send('end')
    await ended
    assert.deepEqual(JSON.parse(answer), digest(upload))
    assert.deepEqual(digest(Buffer.concat(got)), digest(download))
    assert.deepEqual(seen, [['/exchange', 'upgrade']])
    ws.close()
    await once(ws, 'close')
  })

  it('a frame sent with the upgrade request (head) reaches the backend', async () => {
    const client = net.connect(frontPort, '127.0.0.1')
    const payload = stream('ws-head')(1000)
    // A masked binary frame, as a client sends it, in the same write as the request.
    const mask = Buffer.from([1, 2, 3, 4])
    const frame = Buffer.concat([Buffer.from([0x82, 0x80 | 126, payload.length >> 8, payload.length & 0xff]), mask,
      payload.map((b, i) => b ^ mask[i % 4])])
    client.write(Buffer.concat([Buffer.from('GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
      `Sec-WebSocket-Key: ${Buffer.from('sixteen byte key').toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`), frame]))
    let answer = ''
    while (!answer.endsWith('\r\n\r\n')) answer += (await readExactly(client, 1)).toString('latin1')
    assert.match(answer, /^HTTP\/1.1 101 /)
    // The echo, unmasked as a server sends it.
    assert.deepEqual(await readExactly(client, 4), Buffer.from([0x82, 126, payload.length >> 8, payload.length & 0xff]))
    assert.deepEqual(digest(await readExactly(client, payload.length)), digest(payload))
    assert.deepEqual(seen, [['/echo', undefined]])
    client.destroy()
  })
})

describe('recipe: a TLS passthrough router by SNI (examples/sni-router.ts)', function () {
  const upload = stream('sni-up')(MiB)
  const download = stream('sni-down')(2 * MiB)
  let dir = ''
  let servers: https.Server[] = []
  let router: net.Server
  let routerPort = 0
  const accepted = { a: 0, b: 0 }
  before(async function () {
    if (noTls) return
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sosplice-sni-'))
    certificate(dir, ['a.test', 'b.test'])
    fs.writeFileSync(path.join(dir, 'up.bin'), upload)
    const routes = new Map<string, { host: string, port: number }>()
    for (const name of ['a', 'b'] as const) {
      // Each backend says who it is.
      const server = hashingServer(dir, download, { 'x-server': name })
      server.on('secureConnection', () => accepted[name]++)
      routes.set(`${name}.test`, { host: '127.0.0.1', port: await listen(server) })
      servers.push(server)
    }
    router = sniRouter(routes)
    routerPort = await listen(router)
  })
  beforeEach(function () {
    if (noTls) this.skip()
    accepted.a = accepted.b = 0
  })
  after(() => {
    router?.close()
    for (const server of servers) server.close()
    servers = []
    if (dir) fs.rmSync(dir, { recursive: true })
  })

  function curl (name: string) {
    return promisify(execFile)('curl', ['-sS', '--cacert', path.join(dir, 'cert.pem'),
      '--resolve', `${name}:${routerPort}:127.0.0.1`, '--data-binary', `@${path.join(dir, 'up.bin')}`,
      '-D', path.join(dir, `${name}.headers`), '-o', path.join(dir, `${name}.bin`), `https://${name}:${routerPort}/`], { env })
  }

  for (const name of ['a', 'b'] as const) {
    it(`curl --resolve ${name}.test reaches backend ${name}: 1 MiB up, 2 MiB down, every byte${noTls ? ` (skipped: no ${noTls})` : ''}`, async () => {
      assert.equal((await curl(`${name}.test`)).stdout, '')
      const headers = fs.readFileSync(path.join(dir, `${name}.test.headers`), 'latin1')
      assert.match(headers, new RegExp(`x-server: ${name}\r\n`))
      assert.match(headers, new RegExp(`x-upload-sha256: ${digest(upload).sha256}`))
      assert.deepEqual(digest(fs.readFileSync(path.join(dir, `${name}.test.bin`))), digest(download))
      assert.deepEqual(accepted, { a: 0, b: 0, [name]: 1 })
    })
  }

  it(`a ClientHello that comes 50 bytes at a time is read whole and routed${noTls ? ` (skipped: no ${noTls})` : ''}`, async () => {
    const raw = net.connect(routerPort, '127.0.0.1')
    raw.setNoDelay(true)
    const tlsSocket = tls.connect({ socket: dribbleFirstWrite(raw), servername: 'b.test', ca: fs.readFileSync(path.join(dir, 'cert.pem')) })
    await once(tlsSocket, 'secureConnect')
    tlsSocket.write('GET / HTTP/1.1\r\nHost: b.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
    const chunks: Buffer[] = []
    tlsSocket.on('data', (d: Buffer) => chunks.push(d))
    await once(tlsSocket, 'end')
    const response = Buffer.concat(chunks)
    const split = response.indexOf('\r\n\r\n')
    assert.match(response.subarray(0, split).toString('latin1'), /\r\nx-server: b\r\n/)
    assert.deepEqual(digest(response.subarray(split + 4)), digest(download))
    assert.deepEqual(accepted, { a: 0, b: 1 })
  })

  it(`a name with no route is closed, and no backend is reached${noTls ? ` (skipped: no ${noTls})` : ''}`, async () => {
    await assert.rejects(curl('c.test'))
    assert.deepEqual(accepted, { a: 0, b: 0 })
  })
})

/** A duplex over `socket` that writes its first chunk 50 bytes at a time, 5 ms apart. */
function dribbleFirstWrite (socket: net.Socket): Duplex {
  let first = true
  const duplex = new Duplex({
    read: () => socket.resume(),
    async write (chunk: Buffer, _encoding, done) {
      for (let at = 0; at < chunk.length; at += first ? 50 : chunk.length) {
        socket.write(chunk.subarray(at, at + (first ? 50 : chunk.length)))
        if (first) await new Promise(resolve => setTimeout(resolve, 5))
      }
      first = false
      done()
    },
    final (done) {
      socket.end()
      done()
    }
  })
  socket.on('data', (d: Buffer) => { if (!duplex.push(d)) socket.pause() })
  socket.on('end', () => duplex.push(null))
  return duplex
}
