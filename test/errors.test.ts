import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import tls from 'node:tls'
import { backends, splice } from '../lib/index.js'
import { eachBackend, rig, runScript, sleep } from './helpers.js'

function throwsCode (fn: () => unknown, code: string) {
  assert.throws(fn, (err: NodeJS.ErrnoException) => {
    assert.equal(err.code, code, err.message)
    return true
  })
}

eachBackend('bad input', backend => {
  let r: Awaited<ReturnType<typeof rig>>
  beforeEach(async () => { r = await rig() })
  afterEach(() => r.destroy())

  it('not a socket', () => {
    throwsCode(() => splice({} as net.Socket, r.drain, { backend }), 'ERR_INVALID_ARG_TYPE')
    throwsCode(() => splice(r.source, 42 as unknown as net.Socket, { backend }), 'ERR_INVALID_ARG_TYPE')
  })

  it('a closed socket', async () => {
    r.drain.destroy()
    await once(r.drain, 'close')
    throwsCode(() => splice(r.source, r.drain, { backend }), 'EBADF')
  })

  it('a listening socket', async () => {
    const server = net.createServer().listen(0, '127.0.0.1')
    await once(server, 'listening')
    throwsCode(() => splice(r.source, server as unknown as net.Socket, { backend }), 'EINVAL')
    server.close()
  })

  it('an unconnected socket', () => {
    throwsCode(() => splice(r.source, new net.Socket(), { backend }), 'ENOTCONN')
  })

  it('the same socket twice', () => {
    throwsCode(() => splice(r.source, r.source, { backend }), 'EINVAL')
  })

  it('a socket already spliced, as source or as drain', async () => {
    const first = splice(r.source, r.drain, { backend })
    throwsCode(() => splice(r.source, r.receiver, { backend }), 'EBUSY')
    throwsCode(() => splice(r.sender, r.drain, { backend }), 'EBUSY')
    first.unsplice()
    assert.equal((await first.done).reason, 'unsplice')
    // Free again once ended.
    const second = splice(r.source, r.drain, { backend })
    second.unsplice()
    assert.equal((await second.done).reason, 'unsplice')
  })

  for (const name of ['max', 'idle'] as const) {
    it(`${name} negative, fractional or not a number`, () => {
      throwsCode(() => splice(r.source, r.drain, { backend, [name]: -1 }), 'ERR_OUT_OF_RANGE')
      throwsCode(() => splice(r.source, r.drain, { backend, [name]: 1.5 }), 'ERR_OUT_OF_RANGE')
      throwsCode(() => splice(r.source, r.drain, { backend, [name]: NaN }), 'ERR_OUT_OF_RANGE')
      throwsCode(() => splice(r.source, r.drain, { backend, [name]: '10' as unknown as number }), 'ERR_INVALID_ARG_TYPE')
    })
  }

  it('options of the wrong type', () => {
    throwsCode(() => splice(r.source, r.drain, 'fast' as never), 'ERR_INVALID_ARG_TYPE')
    throwsCode(() => splice(r.source, r.drain, { backend, end: 1 as unknown as boolean }), 'ERR_INVALID_ARG_TYPE')
    throwsCode(() => splice(r.source, r.drain, { backend: 'magic' as never }), 'ERR_INVALID_ARG_VALUE')
  })

  it('a TLS socket, as source or drain: EINVAL, saying why', () => {
    // No handshake is needed to be refused: the bytes on its wire would be ciphertext.
    for (const [source, drain] of [[new tls.TLSSocket(r.source), r.drain], [r.source, new tls.TLSSocket(r.drain)]]) {
      assert.throws(() => splice(source, drain, { backend }), (err: NodeJS.ErrnoException) => {
        assert.equal(err.code, 'EINVAL')
        assert.match(err.message, /is a TLS socket, whose bytes on the wire are ciphertext/)
        return true
      })
    }
  })

  it('a socket over a JavaScript stream: EINVAL', async () => {
    // The net.Socket Node makes around a Duplex (as tls.connect({ socket: duplex }) does).
    const { code, stdout, stderr } = await runScript(`
      const JSStreamSocket = require('internal/js_stream_socket')
      const { Duplex } = require('node:stream')
      rig().then(r => {
        const wrapped = new JSStreamSocket(new Duplex({ read () {}, write (chunk, encoding, callback) { callback() } }))
        try {
          splice(wrapped, r.drain, { backend: ${JSON.stringify(backend)} })
        } catch (err) {
          console.log(err.code, err.message)
        }
        r.destroy()
      })`, ['--expose-internals'])
    assert.equal(code, 0, stderr)
    assert.match(stdout, /^EINVAL .*source carries a JavaScript stream \(JSStream\), not a kernel socket/)
  })

  it('a drain already ended: EPIPE at once', () => {
    r.drain.end()
    throwsCode(() => splice(r.source, r.drain, { backend }), 'EPIPE')
  })

  it('idle beyond what Node can time (2 ** 31 - 1 ms): ERR_OUT_OF_RANGE; at the limit it runs', async () => {
    throwsCode(() => splice(r.source, r.drain, { backend, idle: 2 ** 31 }), 'ERR_OUT_OF_RANGE')
    const sp = splice(r.source, r.drain, { backend, idle: 2 ** 31 - 1 })
    await sleep(100)
    sp.unsplice()
    assert.deepEqual(await sp.done, { bytes: 0, reason: 'unsplice' })
  })

  it('a failed splice leaves both sockets usable', async () => {
    throwsCode(() => splice(r.source, r.drain, { backend, max: -1 }), 'ERR_OUT_OF_RANGE')
    r.sender.write('ping')
    const [data] = await once(r.source, 'data')
    assert.equal(data.toString(), 'ping')
  })
})

describe('bad input [pipe]: a Node socket over a descriptor that is not a socket', () => {
  it('ENOTSOCK', async function () {
    if (!backends().includes('pipe')) this.skip()
    const r = await rig()
    // No pipe(2) in Node: a FIFO opened both ways gives a pipe descriptor.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sosplice-'))
    const fifo = path.join(dir, 'fifo')
    execFileSync('mkfifo', [fifo])
    const readEnd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
    const writeEnd = fs.openSync(fifo, fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
    const piped = new net.Socket({ fd: readEnd, readable: true })
    try {
      throwsCode(() => splice(piped, r.drain, { backend: 'pipe' }), 'ENOTSOCK')
    } finally {
      piped.destroy()
      fs.closeSync(writeEnd)
      fs.rmSync(dir, { recursive: true })
      r.destroy()
    }
  })
})

eachBackend('an exception in an end listener', backend => {
  it('is an uncaught exception, not swallowed', async () => {
    const { code, stderr } = await runScript(`
      rig().then(({ source, drain }) => {
        const sp = splice(source, drain, { backend: ${JSON.stringify(backend)} })
        sp.on('end', () => { throw new Error('thrown by a listener') })
        setTimeout(() => sp.unsplice(), 50)
      })`)
    assert.equal(code, 1, `exited with ${code}: ${stderr}`)
    assert.match(stderr, /Error: thrown by a listener/)
  })
})
