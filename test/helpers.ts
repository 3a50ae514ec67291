import assert from 'node:assert/strict'
import crypto from 'node:crypto'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { type BackendName, backends, splice } from '../lib/index.js'
import { loadError, native } from '../lib/native.js'
import { start } from './child.js'

/** Runs `suite` once per backend; one the host lacks is skipped, with why. */
export function eachBackend (title: string, suite: (backend: BackendName) => void): void {
  for (const backend of ['so_splice', 'pipe', 'userspace'] as const) {
    const why = backends().includes(backend)
      ? ''
      : ` (skipped: ${native ? `this host has ${native.backend}` : `addon not loaded: ${loadError?.message}`})`
    describe(`${title} [${backend}]${why}`, function () {
      before(function () { if (why) this.skip() })
      suite(backend)
    })
  }
}

/** A connected pair over loopback: [the connecting end, the accepted end]. */
export async function socketPair (host = '127.0.0.1', connectHost = host,
  options: net.SocketConstructorOpts = {}): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ allowHalfOpen: options.allowHalfOpen ?? false })
  server.listen(0, host)
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  const accepted = once(server, 'connection')
  const client = net.connect({ port, host: connectHost, allowHalfOpen: options.allowHalfOpen ?? false })
  const [peer] = await accepted as [net.Socket]
  await onceConnected(client)
  server.close()
  return [client, peer]
}

let unixPairs = 0

/** A connected pair over a Unix-domain stream socket: [the connecting end, the accepted end]. */
export async function unixSocketPair (options: net.SocketConstructorOpts = {}): Promise<[net.Socket, net.Socket]> {
  const file = path.join(os.tmpdir(), `sosplice-${process.pid}-${unixPairs++}.sock`)
  const server = net.createServer({ allowHalfOpen: options.allowHalfOpen ?? false })
  server.listen(file)
  await once(server, 'listening')
  const accepted = once(server, 'connection')
  const client = net.connect({ path: file, allowHalfOpen: options.allowHalfOpen ?? false })
  const [peer] = await accepted as [net.Socket]
  await onceConnected(client)
  server.close() // and the file with it
  return [client, peer]
}

async function onceConnected (socket: net.Socket) {
  if (socket.connecting) await once(socket, 'connect')
}

/**
 * The proxy's view: `sender` writes into `source` (the proxy's accepted end),
 * `drain` is the proxy's connection whose peer `receiver` reads.
 */
export async function rig (opts: { sourceHost?: string, drainHost?: string, allowHalfOpen?: boolean, unix?: boolean } = {}) {
  const pair = (host: string) => opts.unix ? unixSocketPair(opts) : socketPair(host, host, opts)
  const [sender, source] = await pair(opts.sourceHost ?? '127.0.0.1')
  const [drain, receiver] = await pair(opts.drainHost ?? '127.0.0.1')
  const all = [sender, source, drain, receiver]
  for (const s of all) s.on('error', () => {})
  return { sender, source, drain, receiver, destroy: () => all.forEach(s => s.destroy()) }
}

export interface Digest { length: number, sha256: string }

/** Deterministic, non-repeating bytes: an AES-CTR keystream. */
export function stream (seed: string) {
  const key = crypto.createHash('sha256').update(seed).digest().subarray(0, 16)
  const cipher = crypto.createCipheriv('aes-128-ctr', key, Buffer.alloc(16))
  return (n: number): Buffer => cipher.update(Buffer.alloc(n))
}

export function digest (data: Buffer): Digest {
  return { length: data.length, sha256: crypto.createHash('sha256').update(data).digest('hex') }
}

/** Writes `size` bytes of `seed`'s stream, honouring backpressure; resolves with their digest. */
export async function send (socket: net.Socket, seed: string, size: number, opts: { end?: boolean } = {}): Promise<Digest> {
  const next = stream(seed)
  const hash = crypto.createHash('sha256')
  for (let left = size; left > 0;) {
    const chunk = next(Math.min(left, 1 << 20))
    left -= chunk.length
    hash.update(chunk)
    if (!socket.write(chunk)) await firstOf(socket, ['drain', 'close'])
    if (socket.destroyed) throw new Error(`the socket closed after ${size - left} bytes`)
  }
  if (opts.end ?? true) socket.end()
  return { length: size, sha256: hash.digest('hex') }
}

/**
 * Resets `socket`: its peer gets an RST. Node cannot reset a socket whose
 * end() is still going out (libuv refuses with EINVAL, and Node then drops
 * the handle without closing its descriptor, which leaks); a socket that has
 * ended, as one does on its peer's EOF, resets once its end is out.
 */
export function reset (socket: net.Socket): void {
  if (socket.writableEnded && !socket.writableFinished) socket.once('finish', () => reset(socket))
  else if (!socket.destroyed) socket.resetAndDestroy()
}

/** Resolves on the first of `events`, leaving no listener behind. */
export function firstOf (socket: net.Socket, events: string[]): Promise<void> {
  return new Promise(resolve => {
    const done = () => {
      for (const e of events) socket.off(e, done)
      resolve()
    }
    for (const e of events) socket.on(e, done)
  })
}

/** Reads `socket` to its end; resolves with the digest of what came. */
export function receive (socket: net.Socket): Promise<Digest> {
  const hash = crypto.createHash('sha256')
  let length = 0
  socket.on('data', (d: Buffer) => { length += d.length; hash.update(d) })
  return once(socket, 'end').then(() => ({ length, sha256: hash.digest('hex') }))
}

/** Reads exactly `n` bytes from `socket`, leaving the rest unread. */
export async function readExactly (socket: net.Socket, n: number): Promise<Buffer> {
  const chunks: Buffer[] = []
  let have = 0
  while (have < n) {
    const chunk = socket.read() as Buffer | null
    if (chunk === null) {
      if (socket.readableEnded || socket.destroyed) throw new Error(`ended after ${have} of ${n} bytes`)
      await firstOf(socket, ['readable', 'end'])
      continue
    }
    const want = n - have
    if (chunk.length > want) {
      socket.unshift(chunk.subarray(want))
      chunks.push(chunk.subarray(0, want))
    } else {
      chunks.push(chunk)
    }
    have += Math.min(chunk.length, want)
  }
  return Buffer.concat(chunks)
}

/** Open descriptors, less those the addon's engine keeps for itself. */
export function openFds (): number {
  return fs.readdirSync('/proc/self/fd').length - (native?.stats().descriptors ?? 0)
}

/**
 * Open descriptors at steady state: after one splice on `backend`, once
 * Node and the addon have opened what they keep for the life of the process.
 */
export async function steadyFds (backend: BackendName): Promise<number> {
  const { sender, source, drain, receiver, destroy } = await rig()
  const done = splice(source, drain, { backend }).done
  sender.end('warm')
  await done
  await readExactly(receiver, 4)
  destroy()
  await sleep(50)
  return openFds()
}

/** Asserts that descriptors and live splices are back to `before`. */
export async function assertNoLeaks (before: number): Promise<void> {
  const settled = await eventually(() => openFds() <= before)
  if (!settled) {
    const held = fs.readdirSync('/proc/self/fd').map(fd => {
      try { return fs.readlinkSync(`/proc/self/fd/${fd}`) } catch { return '?' }
    })
    throw new Error(`${openFds()} descriptors open, ${before} before: ${held.map(describeSocket).join(' ')}` +
      (native ? `; ${native.stats().relays} relays live` : ''))
  }
  if (native) assert.equal(native.stats().relays, 0)
}

/** socket:[inode] with what /proc/net says of it (protocol, addresses in hex, state), to tell a leak apart. */
function describeSocket (link: string): string {
  const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1]
  if (!inode) return link
  for (const table of ['tcp', 'tcp6', 'udp', 'udp6', 'unix']) {
    let text = ''
    try { text = fs.readFileSync(`/proc/net/${table}`, 'utf8') } catch { continue }
    const line = text.split('\n').find(l => l.trim().split(/\s+/)[table === 'unix' ? 6 : 9] === inode)
    if (line) return `${link}(${table} ${line.trim().split(/\s+/).slice(1, 4).join(' ')})`
  }
  return link
}

export function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/** `promise`, or a clear failure once `ms` pass: these bounds catch hangs, they time nothing. */
export function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

/** Polls `check` until it is true or `ms` pass. */
export async function eventually (check: () => boolean, ms = 5000): Promise<boolean> {
  for (const start = Date.now(); Date.now() - start < ms; await sleep(10)) {
    if (check()) return true
  }
  return check()
}

/** The package's command line, as `sosplice` would run it. */
export const cli = path.join(__dirname, '..', 'lib', 'cli', 'index.js')

export interface Ran { code: number | null, stdout: string, stderr: string }

/** Runs Node with `args` to its end; `code` is null when it was killed. */
function runNode (args: string[], ms: number): Promise<Ran> {
  return start(['node', ...args], { ms }).done
}

/** Runs `sosplice ...args` to its end. */
export function runCli (...args: string[]): Promise<Ran> {
  return runNode([cli, ...args], 60000)
}

/** Runs `body` in a new Node process (with `flags`) where `splice` and `rig` are in scope. */
export function runScript (body: string, flags: string[] = []): Promise<Ran> {
  const lib = path.join(__dirname, '..', 'lib', 'index.js')
  return runNode([...flags, '-e', `
    const { splice } = require(${JSON.stringify(lib)})
    const { rig } = require(${JSON.stringify(__filename)})
    ${body}`], 10000)
}
