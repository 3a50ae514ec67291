// The recipes in examples/, each driven by a client nobody here wrote
// (curl; Node's own http CONNECT client), every byte checked each way.
import assert from 'node:assert/strict'
import { execFile, execFileSync } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { connectProxy } from '../examples/connect-proxy.js'
import { proxyProtocolProxy } from '../examples/proxy-protocol.js'
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
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-addext', 'subjectAltName=DNS:localhost', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')],
    { stdio: 'ignore', env })
    const upload = stream('connect-up')(MiB)
    const download = stream('connect-down')(2 * MiB)
    fs.writeFileSync(path.join(dir, 'up.bin'), upload)
    const server = https.createServer({
      key: fs.readFileSync(path.join(dir, 'key.pem')),
      cert: fs.readFileSync(path.join(dir, 'cert.pem'))
    }, (req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (d: Buffer) => chunks.push(d))
      req.on('end', () => res.writeHead(200, { 'x-upload-sha256': digest(Buffer.concat(chunks)).sha256 }).end(download))
    })
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
