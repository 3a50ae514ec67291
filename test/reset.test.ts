import assert from 'node:assert/strict'
import { backends, proxy } from '../lib/index.js'
import { digest, receive, reset, send, socketPair, stream } from './helpers.js'

const MiB = 1 << 20
const ROUNDS = 200

function codeOf (err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code
}

// A reset socket has one pending ECONNRESET, taken by the first call to meet
// it: the splice writing into the socket, or the one reading from it. The
// engine passes it from the writer to the reader; that holds only when both
// splices of a connection run on one thread.
describe('proxy() [pipe]: a client resets while it uploads slowly and the server floods it', function () {
  before(function () { if (!backends().includes('pipe')) this.skip() })

  it(`the upload ends with an error, not eof, in each of ${ROUNDS} rounds, and the server gets exactly its bytes`, async function () {
    this.timeout(300000)
    const eofRounds: number[] = []
    for (let round = 0; round < ROUNDS; round++) {
      const [client, a] = await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true })
      const [b, server] = await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true })
      const all = [client, a, b, server]
      for (const s of all) s.on('error', () => {})
      const proxied = proxy(a, b, { backend: 'pipe' })
      const atServer = receive(server)
      const up = stream(`up-${round}`)
      const uploading = setInterval(() => client.write(up(1024)), 1)
      const flooding = send(server, 'down', 64 * MiB, { end: false }).catch(() => undefined)
      client.on('data', () => {
        if (client.bytesRead < MiB || client.destroyed) return
        clearInterval(uploading)
        reset(client)
      })
      const timeout = setTimeout(() => all.forEach(s => s.destroy()), 10000)
      const { aToB, bToA } = await proxied
      clearTimeout(timeout)
      // The server's connection survives: the proxy ends it once it is written out.
      b.end()
      assert.deepEqual(await atServer, digest(stream(`up-${round}`)(aToB.bytes)), `round ${round}: the server's bytes`)
      if (aToB.reason === 'eof') eofRounds.push(round)
      else assert.deepEqual([aToB.reason, ['ECONNRESET', 'EPIPE'].includes(codeOf(aToB.error)!)], ['error', true], `round ${round}: upload ${aToB.reason} ${codeOf(aToB.error)}`)
      assert.equal(bToA.reason, 'error', `round ${round}: download`)
      assert.ok(['ECONNRESET', 'EPIPE'].includes(codeOf(bToA.error)!), `round ${round}: download ${codeOf(bToA.error)}`)
      all.forEach(s => s.destroy())
      await flooding
    }
    assert.deepEqual(eofRounds, [], `${eofRounds.length} of ${ROUNDS} uploads ended eof`)
  })
})
