import { fork } from 'node:child_process'
import { once } from 'node:events'
import net from 'node:net'
import path from 'node:path'

// Kernel vs userspace splicing, side by side in one run: each case moves
// `size` bytes sender -> proxy -> receiver over loopback, in alternation,
// `runs` times. The proxy runs in its own process; its CPU is what counts.

export interface BenchOptions {
  size: number
  runs: number
  cases: string[]
  progress?: (message: string) => void
}

export interface CaseResult {
  name: string
  runs: { gbits: number, userPerGB: number, sysPerGB: number }[]
  gbits: Stat
  userPerGB: Stat
  sysPerGB: Stat
}

export interface Stat { median: number, min: number, max: number }

/** `direct` is the ceiling: no proxy at all. */
export async function bench (options: BenchOptions): Promise<CaseResult[]> {
  const results = new Map(options.cases.map(name => [name, [] as CaseResult['runs']]))
  for (let run = 1; run <= options.runs; run++) {
    for (const name of options.cases) {
      options.progress?.(`run ${run}/${options.runs}: ${name}`)
      results.get(name)!.push(await once1(name, options.size))
    }
  }
  return [...results].map(([name, runs]) => ({
    name,
    runs,
    gbits: stat(runs.map(r => r.gbits)),
    userPerGB: stat(runs.map(r => r.userPerGB)),
    sysPerGB: stat(runs.map(r => r.sysPerGB))
  }))
}

async function once1 (name: string, size: number) {
  const receiver = net.createServer({ allowHalfOpen: true })
  receiver.listen(0, '127.0.0.1')
  await once(receiver, 'listening')
  const receiverPort = (receiver.address() as net.AddressInfo).port
  let port = receiverPort
  const child = name === 'direct'
    ? undefined
    : fork(path.join(__dirname, 'bench-proxy.js'), [name, String(receiverPort)], { stdio: 'ignore' })
  try {
    if (child) port = ((await once(child, 'message'))[0] as { port: number }).port
    const received = new Promise<number>(resolve => receiver.once('connection', s => {
      let n = 0
      s.on('data', (d: Buffer) => { n += d.length })
      s.on('end', () => { s.end(); resolve(n) })
    }))
    const cpu = child ? once(child, 'message') : Promise.resolve([{ cpu: { user: 0, system: 0 } }])
    const started = process.hrtime.bigint()
    const sender = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    await once(sender, 'connect')
    const chunk = Buffer.alloc(1 << 20, 0x5a)
    for (let left = size; left > 0; left -= chunk.length) {
      if (!sender.write(left >= chunk.length ? chunk : chunk.subarray(0, left))) await once(sender, 'drain')
    }
    sender.end()
    sender.resume()
    const got = await received
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    if (got !== size) throw new Error(`${name}: received ${got} of ${size} bytes`)
    await once(sender, 'close')
    const { user, system } = ((await cpu)[0] as { cpu: NodeJS.CpuUsage }).cpu
    const gb = size / 1e9
    return { gbits: size * 8 / seconds / 1e9, userPerGB: user / 1e6 / gb, sysPerGB: system / 1e6 / gb }
  } finally {
    child?.kill()
    receiver.close()
  }
}

function stat (values: number[]): Stat {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
  return { median, min: sorted[0], max: sorted[sorted.length - 1] }
}
