import { once } from 'node:events'
import net from 'node:net'
import { finished } from 'node:stream'
import { parseArgs } from 'node:util'
import { proxy } from '../lib/index.js'
import { native } from '../lib/native.js'
import { digest, openFds, reset, sleep, stream } from './helpers.js'

// `npm run stress`: the hostile and faulty peers of the scale issue, all at
// once against one proxy, for a set time; then totals, and a check that
// every byte that came back was right and that nothing is left open.
// Exits 1 on a wrong byte, a leak, or a splice left alive.

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    backend: { type: 'string', default: 'auto' },
    concurrency: { type: 'string', default: '64' }
  }
})
const seconds = Number(values.seconds)
const concurrency = Number(values.concurrency)

const totals = {
  connections: {} as Record<string, number>,
  bytesChecked: 0,
  wrongBytes: 0,
  endReasons: {} as Record<string, number>,
  errors: {} as Record<string, number>
}
const count = (table: Record<string, number>, key: string) => { table[key] = (table[key] ?? 0) + 1 }

// Connections the proxy is to destroy from JavaScript mid-splice, by the
// client's port (peers and proxy share this process).
const doomed = new Set<number>()

function random (n: number): number {
  return Math.floor(Math.random() * n)
}

// Exchanges under way, by kind: what is still here long after the end hung.
const pending: Record<string, number> = {}

/** Sends `data` (all at once, or a byte per millisecond), half-closes, returns what came back. */
async function exchange (to: number, data: Buffer, options: { slow?: boolean, doom?: boolean, reset?: boolean, stall?: boolean }) {
  const s = net.connect({ port: to, host: '127.0.0.1', allowHalfOpen: true })
  s.on('error', err => count(totals.errors, `client ${(err as NodeJS.ErrnoException).code}`))
  const chunks: Buffer[] = []
  s.on('data', (d: Buffer) => chunks.push(d))
  if (options.stall) s.pause()
  let from: number | undefined
  try {
    await once(s, 'connect')
    from = s.localPort!
    if (options.doom) doomed.add(from)
    if (options.slow) {
      for (const byte of data) { s.write(Buffer.of(byte)); await sleep(1) }
      s.end()
    } else {
      s.end(data)
    }
    if (options.reset) {
      await sleep(random(5))
      reset(s)
      return undefined
    }
    if (options.stall) {
      // Never reads: the proxy's idle limit has to end it.
      await sleep(2500)
      return undefined
    }
    // Until the echo has ended, or the connection was cut.
    await new Promise(resolve => finished(s, { writable: false }, resolve))
    return Buffer.concat(chunks)
  } catch {
    return Buffer.concat(chunks)
  } finally {
    if (from !== undefined) doomed.delete(from)
    s.destroy()
  }
}

async function main () {
  const echo = net.createServer({ allowHalfOpen: true }, s => { s.pipe(s); s.on('error', () => {}) })
  echo.listen(0, '127.0.0.1', 4096)
  await once(echo, 'listening')
  const front = net.createServer({ allowHalfOpen: true }, client => {
    const upstream = net.connect({ port: (echo.address() as net.AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true })
    for (const s of [client, upstream]) s.on('error', () => {})
    const port = client.remotePort!
    setTimeout(() => { if (doomed.has(port)) (random(2) ? client : upstream).destroy() }, random(20))
    proxy(client, upstream, { backend: values.backend as 'auto', idle: 2000 }).then(({ aToB, bToA }) => {
      for (const { reason, error } of [aToB, bToA]) {
        count(totals.endReasons, reason)
        if (error) count(totals.errors, `splice ${(error as NodeJS.ErrnoException).code}`)
      }
      // Let queued bytes out, but give a peer that does not read no more time.
      for (const s of [client, upstream]) {
        finished(s.end(), () => s.destroy())
        setTimeout(() => s.destroy(), 3000)
      }
    })
  })
  front.listen(0, '127.0.0.1', 4096)
  await once(front, 'listening')
  const port = (front.address() as net.AddressInfo).port
  const fdsBefore = openFds()

  const deadline = Date.now() + seconds * 1000
  setTimeout(() => {
    console.error(`stress: FAILED: hung; exchanges still under way: ${JSON.stringify(pending)}`)
    process.exit(1)
  }, seconds * 1000 + 30000).unref()
  let n = 0
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (Date.now() < deadline) {
      const id = n++
      const roll = random(100)
      const kind = roll < 60 ? 'exchange' : roll < 70 ? 'destroyed by proxy' : roll < 80 ? 'client reset'
        : roll < 85 ? 'never reads' : roll < 90 ? 'byte at a time' : roll < 92 ? 'big' : 'tiny'
      count(totals.connections, kind)
      pending[kind] = (pending[kind] ?? 0) + 1
      const size = kind === 'big' || kind === 'never reads' ? 16 << 20 : kind === 'tiny' ? 1 + random(16) : kind === 'byte at a time' ? 200 : 1 + random(1 << 20)
      const data = stream(`stress-${id}`)(size)
      const back = await exchange(port, data, {
        slow: kind === 'byte at a time',
        doom: kind === 'destroyed by proxy',
        reset: kind === 'client reset',
        stall: kind === 'never reads'
      })
      pending[kind]--
      if (back === undefined || kind === 'never reads') continue
      // A connection cut short must still have returned a true prefix.
      const whole = kind !== 'destroyed by proxy'
      const expected = whole ? data : data.subarray(0, back.length)
      if (back.length > data.length || (whole && back.length !== data.length) ||
        digest(back).sha256 !== digest(expected).sha256) {
        totals.wrongBytes++
        console.error(`${kind} #${id}: ${back.length} bytes back of ${data.length}, not the same bytes`)
      } else {
        totals.bytesChecked += back.length
      }
    }
  }))
  front.close()
  echo.close()
  // Connections with a peer that never read end by idle (2 s) and then by the 3 s cap.
  const settle = Date.now()
  while ((openFds() > fdsBefore || (native?.stats().relays ?? 0) > 0) && Date.now() - settle < 15000) await sleep(100)
  const fdsAfter = openFds()
  const engine = native?.stats()
  console.log(JSON.stringify({ seconds, backend: values.backend, concurrency, ...totals, fdsBefore, fdsAfter, engine }, null, 2))
  const ok = totals.wrongBytes === 0 && fdsAfter <= fdsBefore && (engine?.relays ?? 0) === 0
  if (!ok) console.error('stress: FAILED')
  process.exit(ok ? 0 : 1)
}

main()
