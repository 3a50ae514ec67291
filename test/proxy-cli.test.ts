import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import net from 'node:net'
import os from 'node:os'
import type { Readable } from 'node:stream'
import { backends } from '../lib/backends.js'
import dgram from 'node:dgram'
import http from 'node:http'
import { hostPort } from '../lib/cli/args.js'
import { cli, type Digest, digest, receive, runCli, send, stream } from './helpers.js'

/** Where `proxy --udp` listens and its clients are. */
interface UdpPlace { name: string, listen: string, client: string }

const loopback4: UdpPlace = { name: '127.0.0.1', listen: '127.0.0.1:0', client: '127.0.0.1' }

/** Link-local addresses carry their interface ("fe80::1%eth0"): so must a flow's key. */
function linkLocal (): UdpPlace | undefined {
  for (const [name, addresses] of Object.entries(os.networkInterfaces())) {
    const a = addresses?.find(a => a.family === 'IPv6' && a.address.startsWith('fe80:') && !a.internal)
    if (a) return { name: 'link-local IPv6', listen: '[::]:0', client: `${a.address}%${name}` }
  }
  return undefined
}

/** Everything `readable` has said so far, and a wait for what it will say. */
function collect (readable: Readable) {
  let text = ''
  readable.setEncoding('utf8')
  readable.on('data', (d: string) => { text += d })
  return {
    get text () { return text },
    /** The first match of `re`, once there is one; rejects if the output ends without. */
    match (re: RegExp): Promise<RegExpExecArray> {
      return new Promise((resolve, reject) => {
        const check = () => {
          const m = re.exec(text)
          if (m) {
            readable.off('data', check).off('end', ended)
            resolve(m)
          }
        }
        const ended = () => {
          readable.off('data', check)
          reject(new Error(`the output ended without ${re}:\n${text}`))
        }
        readable.on('data', check).on('end', ended)
        check()
        if (readable.readableEnded) ended()
      })
    }
  }
}

describe('sosplice proxy (command line)', () => {
  const children: ChildProcess[] = []
  const servers: net.Server[] = []
  const sockets: net.Socket[] = []

  afterEach(() => {
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
    for (const server of servers.splice(0)) server.close()
    for (const socket of sockets.splice(0)) socket.destroy()
  })

  /** `proxy --udp` (idle 300 ms) to a UDP echo server, and `n` clients bound at `where`. */
  async function udpEchoProxy (backend: string, n: number, where: UdpPlace = loopback4) {
    const echo = dgram.createSocket('udp4')
    echo.bind(0, '127.0.0.1')
    await once(echo, 'listening')
    echo.on('message', (m: Buffer, r: dgram.RemoteInfo) => echo.send(m, r.port, r.address))
    const child = spawn(process.execPath, [cli, 'proxy', '--udp', '--listen', where.listen, '--to', `127.0.0.1:${echo.address().port}`,
      '--idle', '300', '--backend', backend], { stdio: ['ignore', 'pipe', 'pipe'] })
    children.push(child)
    const out = collect(child.stdout!)
    const err = collect(child.stderr!)
    const port = Number((await out.match(new RegExp(`^listening on udp \\S+:(\\d+) -> 127\\.0\\.0\\.1:\\d+ \\(backend ${backend}\\)$`, 'm')))[1])
    const clients = await Promise.all(Array.from({ length: n }, async () => {
      const c = dgram.createSocket(where.client.includes(':') ? 'udp6' : 'udp4')
      c.bind(0, where.client)
      await once(c, 'listening')
      return c
    }))
    return { echo, child, out, err, port, clients }
  }

  /** Starts `sosplice proxy ARGS` and waits for its 'listening on' line. */
  async function start (...args: string[]) {
    const child = spawn(process.execPath, [cli, 'proxy', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    children.push(child)
    const out = collect(child.stdout!)
    const err = collect(child.stderr!)
    const exit = once(child, 'close').then(([code]) => code as number | null)
    const listening = await out.match(/^listening on 127\.0\.0\.1:(\d+) -> \S+ \(backend (\w+)\)$/m)
      .catch(e => { throw new Error(`${e.message}\nstderr:\n${err.text}`) })
    return { child, out, err, exit, port: Number(listening[1]), backend: listening[2] }
  }

  /**
   * An upstream that reads each connection to its end, then answers with
   * `reply` bytes of the 'down' stream and ends. `received` has the digest
   * of what each connection brought, in order of arrival.
   */
  async function upstream (reply: number) {
    const received: Promise<Digest>[] = []
    const server = net.createServer({ allowHalfOpen: true }, socket => {
      sockets.push(socket)
      socket.on('error', () => {})
      received.push(receive(socket).then(async got => {
        await send(socket, 'down', reply)
        return got
      }))
    })
    servers.push(server)
    server.listen(0, '127.0.0.1')
    await once(server, 'listening')
    return { server, port: (server.address() as net.AddressInfo).port, received }
  }

  async function connect (port: number, allowHalfOpen = true): Promise<net.Socket> {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen })
    sockets.push(socket)
    socket.on('error', () => {})
    await once(socket, 'connect')
    return socket
  }

  async function freePort (): Promise<number> {
    const server = net.createServer().listen(0, '127.0.0.1')
    await once(server, 'listening')
    const { port } = server.address() as net.AddressInfo
    server.close()
    await once(server, 'close')
    return port
  }

  for (const [args, message] of [
    [['--listen', '0'], /--to HOST:PORT or --connect is required/],
    [['--listen', '0', '--to', '127.0.0.1:8080', '--connect'], /--to and --connect: give one, not both/],
    [['--listen', '0', '--to', '127.0.0.1:8080', '--proxy-protocol', 'v3'], /--proxy-protocol: v1 or v2, not v3/],
    [['--listen', '0', '--connect', '--proxy-protocol', 'v1'], /--proxy-protocol goes with --to/],
    [['--listen', '0', '--connect', '--udp'], /--udp goes with --to, not --connect/],
    [['--listen', '0', '--to', '127.0.0.1:53', '--udp', '--splice-after', '1K'], /--udp: --proxy-protocol and --splice-after are for TCP/],
    [['--to', '127.0.0.1:8080'], /--listen \[HOST:\]PORT is required/],
    [['--listen', '0', '--to', '8080'], /--to: expected host:port, not 8080/],
    [['--listen', '0', '--to', '127.0.0.1:70000'], /--to: port 70000 is out of range/],
    [['--listen', '0', '--to', '127.0.0.1:0'], /--to: port 0 is out of range 1-65535/],
    [['--listen', '0', '--to', '127.0.0.1:8080', '--backend', 'warp'], /--backend: warp is not one of auto, /],
    [['--listen', '0', '--to', '127.0.0.1:8080', '--splice-after', 'some'], /--splice-after: not a size: some/],
    [['--listen', '0', '--to', '127.0.0.1:8080', '--idle', 'abc'], /--idle must be a whole number/],
    [['--listen', '0', '--to', '127.0.0.1:8080', '--idle', '99999999999'], /--idle must be at most 2147483647, not 99999999999/],
    [['--listen', '0', '--to', '127.0.0.1:8080', '--max', '99999999999G'], /--max must be at most 9007199254740991 bytes, not 99999999999G/],
    [['--listen', '0', '--to', '127.0.0.1:8080', '--max', 'lots'], /--max: not a size: lots/]
  ] as const) {
    it(`rejects ${args.join(' ')} with exit code 2 and a message`, async () => {
      const { code, stdout, stderr } = await runCli('proxy', ...args)
      assert.equal(code, 2)
      assert.equal(stdout, '')
      assert.match(stderr, message)
      assert.match(stderr, /Usage: sosplice proxy/)
    })
  }

  it('--help tells the log line format', async () => {
    const { code, stdout } = await runCli('proxy', '--help')
    assert.equal(code, 0)
    assert.match(stdout, /up BYTES B \(REASON\) down BYTES B \(REASON\) SECONDS s/)
  })

  it('a port in use: exit code 1 and EADDRINUSE', async () => {
    const busy = net.createServer().listen(0, '127.0.0.1')
    servers.push(busy)
    await once(busy, 'listening')
    const { port } = busy.address() as net.AddressInfo
    const { code, stdout, stderr } = await runCli('proxy', '--listen', `127.0.0.1:${port}`, '--to', '127.0.0.1:9')
    assert.equal(code, 1)
    assert.equal(stdout, '')
    assert.match(stderr, new RegExp(`^sosplice proxy: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE \\(`))
  })

  it('an address not on this host: exit code 1 and EADDRNOTAVAIL', async () => {
    const { code, stderr } = await runCli('proxy', '--listen', '192.0.2.1:0', '--to', '127.0.0.1:9')
    assert.equal(code, 1)
    assert.match(stderr, /cannot listen on 192\.0\.2\.1:0: EADDRNOTAVAIL/)
  })

  const staged = backends().filter(b => b !== 'userspace').map(b => [b, '--splice-after', '64K'])
  for (const [backend, ...options] of [...backends().map(b => [b]), ...staged]) {
    it(`[${[backend, ...options].join(' ')}] moves 8 MiB up and a reply down, every byte, and logs both counts`, async () => {
      const up = await upstream(300_000)
      // No host: 127.0.0.1, which start() expects.
      const proxy = await start('--listen', '0', '--to', `127.0.0.1:${up.port}`, '--backend', backend, ...options)
      assert.equal(proxy.backend, backend)
      const client = await connect(proxy.port)
      const from = client.localPort
      const [sent, got] = await Promise.all([send(client, 'up', 8 << 20), receive(client)])
      assert.deepEqual(await up.received[0], sent)
      assert.deepEqual(got, digest(stream('down')(300_000)))
      await proxy.out.match(new RegExp(`^127\\.0\\.0\\.1:${from} -> 127\\.0\\.0\\.1:${up.port} ` +
        `up ${8 << 20} B \\(eof\\) down 300000 B \\(eof\\) \\d+\\.\\d{3} s$`, 'm'))
      assert.equal(proxy.err.text, '')
    })
  }

  for (const version of ['v1', 'v2'] as const) {
    it(`--proxy-protocol ${version}: the upstream gets the header with the client's address, then every byte`, async () => {
      const up = await upstream(1000)
      const proxy = await start('--listen', '0', '--to', `127.0.0.1:${up.port}`, '--proxy-protocol', version)
      const client = await connect(proxy.port)
      const from = client.localPort!
      const header = version === 'v1'
        ? Buffer.from(`PROXY TCP4 127.0.0.1 127.0.0.1 ${from} ${proxy.port}\r\n`)
        : Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0, 12,
          127, 0, 0, 1, 127, 0, 0, 1, from >> 8, from & 0xff, proxy.port >> 8, proxy.port & 0xff])
      const got = receive(client)
      await send(client, 'pp', 1 << 20)
      // The reply comes once the upstream has read everything.
      assert.deepEqual(await got, digest(stream('down')(1000)))
      assert.deepEqual(await up.received[0], digest(Buffer.concat([header, stream('pp')(1 << 20)])))
      await proxy.out.match(new RegExp(` up ${1 << 20} B \\(eof\\) down 1000 B \\(eof\\) `))
    })
  }

  it('--connect: a CONNECT tunnel to the upstream, every byte each way, logged with the target', async () => {
    const up = await upstream(300_000)
    const proxy = await start('--listen', '0', '--connect')
    const req = http.request({ host: '127.0.0.1', port: proxy.port, method: 'CONNECT', path: `127.0.0.1:${up.port}` })
    req.end()
    const [res, tunnel] = await once(req, 'connect') as [http.IncomingMessage, net.Socket]
    sockets.push(tunnel)
    assert.equal(res.statusCode, 200)
    const from = tunnel.localPort
    const [sent, got] = await Promise.all([send(tunnel, 'up', 4 << 20), receive(tunnel)])
    assert.deepEqual(await up.received[0], sent)
    assert.deepEqual(got, digest(stream('down')(300_000)))
    await proxy.out.match(new RegExp(`^127\\.0\\.0\\.1:${from} -> 127\\.0\\.0\\.1:${up.port} ` +
      `up ${4 << 20} B \\(eof\\) down 300000 B \\(eof\\) \\d+\\.\\d{3} s$`, 'm'))
  })

  it('--connect: a target that refuses gets 502, logged with its error', async () => {
    const port = await freePort()
    const proxy = await start('--listen', '0', '--connect')
    const req = http.request({ host: '127.0.0.1', port: proxy.port, method: 'CONNECT', path: `127.0.0.1:${port}` })
    req.end()
    const [res, tunnel] = await once(req, 'connect') as [http.IncomingMessage, net.Socket]
    sockets.push(tunnel)
    assert.equal(res.statusCode, 502)
    await proxy.out.match(new RegExp(`^127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:${port} refused \\(502\\) error upstream ECONNREFUSED$`, 'm'))
  })

  for (const backend of backends().filter(b => b !== 'so_splice')) {
    it(`--udp [${backend}]: five clients at once, 300 datagrams each way each, every one back once and, after the first window, in order; a line per flow`, async () => {
      const { echo, child, out, err, port, clients } = await udpEchoProxy(backend, 5)
      const sent = clients.map((_, i) => Array.from({ length: 300 }, (_, k) => stream(`udp-${i}-${k}`)(100 + k)))
      const got: Buffer[][] = clients.map(() => [])
      clients.forEach((c, i) => c.on('message', (m: Buffer) => got[i].push(m)))
      // Paced: a window of 20 from each, then wait for the echoes.
      for (let k = 0; k < 300; k += 20) {
        for (const [i, c] of clients.entries()) for (const d of sent[i].slice(k, k + 20)) c.send(d, port, '127.0.0.1')
        const want = Math.min(k + 20, 300)
        for (let t = 0; got.some(g => g.length < want); t++) {
          if (t > 500) assert.fail(`echoes: ${got.map(g => g.length)} of ${want}`)
          await new Promise(resolve => setTimeout(resolve, 10))
        }
      }
      // The first window meets the flow opening: some go by the listener,
      // by hand, and can be passed by the first spliced ones.
      const unordered = (list: Buffer[]) => list.map(d => digest(d).sha256).sort()
      got.forEach((g, i) => {
        assert.deepEqual(unordered(g.slice(0, 20)), unordered(sent[i].slice(0, 20)), `client ${i}: first window`)
        assert.deepEqual(g.slice(20).map(digest), sent[i].slice(20).map(digest), `client ${i}`)
      })
      const bytes = sent[0].reduce((n, d) => n + d.length, 0)
      for (const c of clients) {
        await out.match(new RegExp(`^127\\.0\\.0\\.1:${c.address().port} -> 127\\.0\\.0\\.1:\\d+ up ${bytes} B in 300 datagrams \\(idle\\) ` +
          `down ${bytes} B in 300 datagrams \\(idle\\) \\d+\\.\\d{3} s$`, 'm'))
      }
      child.kill('SIGINT')
      assert.equal((await once(child, 'close'))[0], 0)
      assert.match(err.text, /closing: waiting for 0 live flow\(s\) to be idle/)
      for (const c of [...clients, echo]) c.close()
    })
  }

  for (const backend of backends().filter(b => b !== 'so_splice')) {
    // A new flow's socket shares the listening port and, until it is
    // connected, can be given any client's datagrams: they must still reach
    // the upstream through their own client's flow.
    for (const place of [loopback4, linkLocal() ?? { name: 'link-local IPv6', listen: '', client: '' }]) {
      it(`--udp [${backend}]: twenty clients on ${place.name} bursting at once while their flows open: each gets back its own datagrams only, none twice`, async function () {
        if (!place.client) {
          this.test!.title += ' (skipped: no link-local IPv6 address on this host)'
          this.skip()
        }
        const { echo, child, out, port, clients } = await udpEchoProxy(backend, 20, place)
        const got = clients.map(() => new Set<string>())
        const strange: string[] = []
        clients.forEach((c, i) => c.on('message', (m: Buffer) => {
          const text = m.toString()
          if (!text.startsWith(`${i}-`) || got[i].has(text)) strange.push(`client ${i} got ${text}`)
          got[i].add(text)
        }))
        // No pacing: the listener's queue overflows and some are lost, as UDP
        // allows (a client may lose all of its burst); then one each, paced.
        for (let k = 0; k < 50; k++) for (const [i, c] of clients.entries()) c.send(`${i}-${k}`, port, place.client)
        await new Promise(resolve => setTimeout(resolve, 100))
        for (const [i, c] of clients.entries()) c.send(`${i}-last`, port, place.client)
        for (let t = 0; t < 100 && got.some((g, i) => !g.has(`${i}-last`)); t++) await new Promise(resolve => setTimeout(resolve, 20))
        const logged = (c: dgram.Socket) => out.text.includes(`${hostPort(place.client, c.address().port)} -> `)
        for (let t = 0; t < 100 && !clients.every(logged); t++) await new Promise(resolve => setTimeout(resolve, 20))
        assert.deepEqual(strange, [])
        for (const [i, g] of got.entries()) assert.ok(g.has(`${i}-last`), `client ${i}: its paced datagram did not come back`)
        // One flow per client, none for a stray's sender misread, none failed.
        const flows = out.text.split('\n').filter(line => / up \d+ B in /.test(line))
        assert.equal(flows.length, clients.length, flows.join('\n'))
        assert.ok(flows.every(line => !/ error /.test(line)), flows.join('\n'))
        child.kill('SIGINT')
        assert.equal((await once(child, 'close'))[0], 0)
        for (const c of [...clients, echo]) c.close()
      })
    }
  }

  it('an upstream that refuses: the client is closed and the log names ECONNREFUSED; SIGINT exits 0', async () => {
    const port = await freePort()
    const proxy = await start('--listen', '127.0.0.1:0', '--to', `127.0.0.1:${port}`)
    // Not half-open: the proxy's FIN closes it.
    const client = await connect(proxy.port, false)
    let got = 0
    client.on('data', (d: Buffer) => { got += d.length })
    await once(client, 'close')
    assert.equal(got, 0)
    await proxy.out.match(/ up 0 B \(error\) down 0 B \(error\) \d+\.\d{3} s error upstream ECONNREFUSED$/m)
    proxy.child.kill('SIGINT')
    assert.equal(await proxy.exit, 0)
    assert.match(proxy.err.text, /closing: waiting for 0 live connection\(s\)/)
  })

  it('SIGTERM: no new connections, the live one moves every byte to its end, then exit 0', async () => {
    const up = await upstream(100_000)
    const proxy = await start('--listen', '127.0.0.1:0', '--to', `127.0.0.1:${up.port}`)
    const next = stream('term')
    const first = next(1 << 20)
    const rest = next(7 << 20)
    const accepted = once(up.server, 'connection')
    const client = await connect(proxy.port)
    client.write(first)
    // Bytes at the upstream: the proxy has this connection in hand.
    const [upSocket] = await accepted as [net.Socket]
    await once(upSocket, 'data')

    proxy.child.kill('SIGTERM')
    await proxy.err.match(/closing: waiting for 1 live connection\(s\)/)
    const late = net.connect({ port: proxy.port, host: '127.0.0.1' })
    sockets.push(late)
    const [error] = await once(late, 'error')
    assert.equal(error.code, 'ECONNREFUSED')

    const down = receive(client)
    client.end(rest)
    assert.deepEqual(await up.received[0], digest(Buffer.concat([first, rest])))
    assert.deepEqual(await down, digest(stream('down')(100_000)))
    assert.equal(await proxy.exit, 0)
    assert.match(proxy.out.text, / up 8388608 B \(eof\) down 100000 B \(eof\) /)
    assert.doesNotMatch(proxy.err.text, /still holds/)
  })

  it('a second SIGTERM closes the live connections at once and exits 1', async () => {
    const up = await upstream(0)
    const proxy = await start('--listen', '127.0.0.1:0', '--to', `127.0.0.1:${up.port}`)
    const accepted = once(up.server, 'connection')
    const client = await connect(proxy.port, false)
    client.write('hello')
    const [upSocket] = await accepted as [net.Socket]
    await once(upSocket, 'data')

    proxy.child.kill('SIGTERM')
    await proxy.err.match(/closing: waiting for 1 live connection\(s\)/)
    const closed = once(client, 'close')
    proxy.child.kill('SIGTERM')
    assert.equal(await proxy.exit, 1)
    await closed
    assert.match(proxy.err.text, /second SIGTERM: closing 1 live connection\(s\) now/)
    assert.match(proxy.out.text, / up 5 B \(close\) down 0 B \(close\) /)
  })
})
