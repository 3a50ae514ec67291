import assert from 'node:assert/strict'
import { fork } from 'node:child_process'
import { once } from 'node:events'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { digest, eachBackend, receive, sleep, stream } from './helpers.js'

// Many concurrent proxied connections through one proxy process (peers in
// this one). Each costs the proxy 4 descriptors while spliced by a kernel
// backend, and no pipe while idle: its two sockets and the engine's dup() of
// each. 10,000 need a RLIMIT_NOFILE over 40,000; where the hard limit is lower and
// cannot be raised, the test runs as many as fit and says so in its title.

const wanted = 10_000
const perConnection = 4
const reserve = 256
const hardLimit = Number(/^Max open files\s+\d+\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))?.[1])
const count = Math.min(wanted, Math.floor((hardLimit - reserve) / perConnection))
const why = count < wanted ? ` (RLIMIT_NOFILE is ${hardLimit}: ${wanted} need ${wanted * perConnection + reserve})` : ''
const bytes = 16 * 1024

interface Measure { live: number, fds: number, rss: number, engine: { relays: number, descriptors: number } | null }

eachBackend(`${count} concurrent proxied connections${why}`, backend => {
  it('all carry their bytes both ways exactly, then the proxy holds nothing', async function () {
    this.timeout(300000)
    const echo = net.createServer({ allowHalfOpen: true }, s => { s.pipe(s); s.on('error', () => {}) })
    echo.listen(0, '127.0.0.1', 4096)
    await once(echo, 'listening')
    const child = fork(path.join(__dirname, 'scale-proxy.js'), [backend, String((echo.address() as net.AddressInfo).port)],
      { execArgv: ['--expose-gc'] })
    try {
      const [{ port }] = await once(child, 'message') as [{ port: number }]
      const measure = async () => { child.send('measure'); return (await once(child, 'message'))[0] as Measure }
      /** Measures until `ok` holds (or a minute passes); the last measure. */
      const measureUntil = async (ok: (m: Measure) => boolean) => {
        let m = await measure()
        for (const start = Date.now(); !ok(m) && Date.now() - start < 60000; await sleep(20)) m = await measure()
        return m
      }
      const connect = async () => {
        const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
        await once(s, 'connect')
        return s
      }
      // One round first, so that the engine's workers exist in the baseline.
      const warm = await connect()
      warm.end()
      await once(warm.resume(), 'end')
      const before = await measureUntil(m => m.live === 0)

      const clients: net.Socket[] = []
      for (let i = 0; i < count; i += 250) {
        clients.push(...await Promise.all(Array.from({ length: Math.min(250, count - i) }, () => connect())))
      }
      const allSpliced = (m: Measure) => m.live === count && (backend === 'userspace' || m.engine!.relays === count)
      const idle = await measureUntil(allSpliced)
      assert.ok(allSpliced(idle), `live ${idle.live}, kernel relays ${idle.engine?.relays} of ${count}`)
      const fdsPer = (idle.fds - before.fds) / count
      console.log(`      ${backend}: per idle connection ${fdsPer.toFixed(2)} descriptors, ` +
        `${((idle.rss - before.rss) / count / 1024).toFixed(1)} KiB of proxy RSS`)
      // Its two sockets, and for the kernel one duplicate of each; no pipe.
      assert.equal(Math.round(fdsPer), backend === 'userspace' ? 2 : 4)

      const sent = clients.map((_, i) => stream(`scale-${i}`)(bytes))
      const got = await Promise.all(clients.map((s, i) => {
        const echoed = receive(s)
        s.end(sent[i])
        return echoed
      }))
      for (let i = 0; i < count; i++) assert.deepEqual(got[i], digest(sent[i]), `connection ${i}`)
      for (const s of clients) s.destroy()

      const after = await measureUntil(m => m.live === 0)
      assert.equal(after.live, 0)
      assert.equal(after.fds, before.fds, 'descriptors left in the proxy')
      if (after.engine) assert.equal(after.engine.relays, 0)
    } finally {
      child.kill()
      echo.close()
    }
  })
})
