import assert from 'node:assert/strict'
import { once } from 'node:events'
import { splice } from '../lib/index.js'
import { eachBackend, eventually, receive, rig, send } from './helpers.js'

// Once both FINs have passed, a TCP socket is closed: getpeername() fails
// with ENOTCONN, yet what its peer sent is still there to be read, then EOF.
eachBackend('a source whose connection is closed both ways', backend => {
  // 20 KB: Node has already read all of it; 100 KB: the kernel still holds some.
  for (const size of [20000, 100000]) {
    it(`still gives its ${size} bytes, then eof`, async () => {
      const r = await rig()
      try {
        const sent = send(r.sender, `closed-${size}`, size)
        await once(r.sender, 'finish')
        // The source ends its side too, and its peer sees that FIN.
        r.source.end()
        r.sender.resume()
        await once(r.sender, 'end')
        assert.ok(await eventually(() => r.source.remoteAddress === undefined), 'the source is still connected')
        const received = receive(r.receiver)
        const result = await splice(r.source, r.drain, { backend }).done
        assert.deepEqual(result, { bytes: size, reason: 'eof' })
        assert.deepEqual(await received, await sent)
      } finally {
        r.destroy()
      }
    })
  }
})
