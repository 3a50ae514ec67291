import { type ChildProcess, execFile, fork, spawn } from 'node:child_process'
import { once } from 'node:events'
import net from 'node:net'
import path from 'node:path'
import readline from 'node:readline'
import { promisify } from 'node:util'

// Kernel vs userspace splicing, side by side in one run. Two workloads,
// each case in alternation `runs` times at each concurrency:
// - bulk: `size` bytes in all, shared over `connections` connections,
//   sender -> proxy -> receiver; throughput and proxy CPU per GB.
// - short: for `duration` seconds, `connections` clients each open a
//   connection, send `message` bytes, read them echoed back and close, again
//   and again; connections per second, latency, proxy CPU per connection.
// Each once with Node peers, once with C peers (bench/peer.c) when `peer`
// is given: Node peers on a small machine cap what a proxy can show.
// The proxy runs in its own process, so its CPU is counted apart from the
// peers'. `direct` is the ceiling: the peers talk with no proxy.

export interface BenchOptions {
  size: number
  connections: number[]
  duration: number
  /** Bytes each way per short connection. */
  message: number
  /** The workloads with Node peers. */
  nodePeers: boolean
  runs: number
  cases: string[]
  /** The compiled C peer, for the workloads with C peers. */
  peer?: string
  progress?: (message: string) => void
}

export interface Stat { median: number, min: number, max: number }

export interface BulkRun { gbits: number, userPerGB: number, sysPerGB: number }
export interface ShortRun {
  perSecond: number
  p50: number
  p99: number
  userPerConnection: number
  sysPerConnection: number
  errors: Record<string, number>
}

export interface CaseResult<Run> {
  name: string
  connections: number
  runs: Run[]
  /** Median, min and max over the runs of each figure, by the figure's name. */
  stats: Record<string, Stat>
}

export interface BenchReport {
  bulk: CaseResult<BulkRun>[]
  short: CaseResult<ShortRun>[]
  /** The workloads with C peers. */
  bulkC: CaseResult<BulkRun>[]
  shortC: CaseResult<ShortRun>[]
}

export async function bench (options: BenchOptions): Promise<BenchReport> {
  const report: BenchReport = { bulk: [], short: [], bulkC: [], shortC: [] }
  const { size, duration, message, peer } = options
  for (const connections of options.connections) {
    if (options.nodePeers) {
      report.bulk.push(...await alternate(options, connections, 'bulk', name => bulk(name, size, connections)))
    }
    if (peer) {
      report.bulkC.push(...await alternate(options, connections, 'bulk, C peers',
        name => bulkC(name, size, connections, peer)))
    }
    if (duration > 0 && options.nodePeers) {
      report.short.push(...await alternate(options, connections, 'short',
        name => short(name, duration, connections, message)))
    }
    if (duration > 0 && peer) {
      report.shortC.push(...await alternate(options, connections, 'short, C peers',
        name => shortC(name, duration, connections, message, peer)))
    }
  }
  return report
}

async function alternate<Run extends object> (options: BenchOptions, connections: number, workload: string,
  once1: (name: string) => Promise<Run>): Promise<CaseResult<Run>[]> {
  const runs = new Map(options.cases.map(name => [name, [] as Run[]]))
  for (let run = 1; run <= options.runs; run++) {
    for (const name of options.cases) {
      options.progress?.(`${workload}, ${connections} connection(s), run ${run}/${options.runs}: ${name}`)
      runs.get(name)!.push(await once1(name))
    }
  }
  return [...runs].map(([name, list]) => ({ name, connections, runs: list, stats: stats(list) }))
}

function stats (runs: object[]): Record<string, Stat> {
  const figures = Object.keys(runs[0]).filter(k => k !== 'errors')
  return Object.fromEntries(figures.map(k => [k, stat(runs.map(r => (r as Record<string, number>)[k]))]))
}

async function bulk (name: string, size: number, connections: number): Promise<BulkRun> {
  const shares = Array.from({ length: connections }, (_, i) =>
    Math.floor(size / connections) + (i < size % connections ? 1 : 0))
  let ended = 0
  let received = 0
  let allEnded!: () => void
  let failed!: (err: Error) => void
  const done = new Promise<void>((resolve, reject) => { allEnded = resolve; failed = reject })
  const receiver = net.createServer({ allowHalfOpen: true }, s => {
    s.on('data', (d: Buffer) => { received += d.length })
    s.on('end', () => { s.end(); if (++ended === connections) allEnded() })
    s.on('error', failed)
  })
  return withPeers(name, receiver, async (port, measure) => {
    const chunk = Buffer.alloc(1 << 20, 0x5a)
    const started = process.hrtime.bigint()
    await Promise.all([done, ...shares.map(async share => {
      const sender = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
      await once(sender, 'connect')
      for (let left = share; left > 0; left -= chunk.length) {
        if (!sender.write(left >= chunk.length ? chunk : chunk.subarray(0, left))) await once(sender, 'drain')
      }
      sender.end()
      sender.resume()
      await once(sender, 'close')
    })])
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    if (received !== size) throw new Error(`${name}: received ${received} of ${size} bytes`)
    return bulkRun(size, seconds, await measure())
  })
}

function bulkRun (size: number, seconds: number, cpu: NodeJS.CpuUsage): BulkRun {
  const gb = size / 1e9
  return { gbits: size * 8 / seconds / 1e9, userPerGB: cpu.user / 1e6 / gb, sysPerGB: cpu.system / 1e6 / gb }
}

async function short (name: string, duration: number, connections: number, size: number): Promise<ShortRun> {
  const echo = net.createServer({ allowHalfOpen: true }, s => {
    s.pipe(s)
    s.on('error', () => {})
  })
  return withPeers(name, echo, async (port, measure) => {
    const message = Buffer.alloc(size, 0x5a)
    const latencies: number[] = []
    const errors: Record<string, number> = {}
    const started = process.hrtime.bigint()
    const deadline = started + BigInt(Math.round(duration * 1e9))
    await Promise.all(Array.from({ length: connections }, async () => {
      while (process.hrtime.bigint() < deadline) {
        const t0 = process.hrtime.bigint()
        try {
          await exchange(port, message)
          latencies.push(Number(process.hrtime.bigint() - t0) / 1e6)
        } catch (err) {
          const code = (err as NodeJS.ErrnoException).code ?? 'other'
          errors[code] = (errors[code] ?? 0) + 1
        }
      }
    }))
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    const cpu = await measure()
    const n = latencies.length
    if (n === 0) throw new Error(`${name}: no connection completed (${JSON.stringify(errors)})`)
    latencies.sort((a, b) => a - b)
    return shortRun(n, seconds, latencies[Math.floor(n * 0.5)], latencies[Math.floor(n * 0.99)], cpu, errors)
  })
}

function shortRun (n: number, seconds: number, p50: number, p99: number, cpu: NodeJS.CpuUsage,
  errors: Record<string, number>): ShortRun {
  return { perSecond: n / seconds, p50, p99, userPerConnection: cpu.user / n, sysPerConnection: cpu.system / n, errors }
}

/** The bulk workload between a C sender and a C sink. */
async function bulkC (name: string, size: number, connections: number, peer: string): Promise<BulkRun> {
  return withCServer(peer, 'sink', async (port, report) => {
    const { seconds, cpu } = await withProxy(name, port, async (port, measure) => {
      const { stdout } = await promisify(execFile)(peer, ['send', String(port), String(connections), String(size)])
      return { seconds: (JSON.parse(stdout) as { seconds: number }).seconds, cpu: await measure() }
    })
    const { bytes } = JSON.parse(await report()) as { bytes: number }
    if (bytes !== size) throw new Error(`${name}: received ${bytes} of ${size} bytes`)
    return bulkRun(size, seconds, cpu)
  })
}

/** The short workload between a C client and a C echo server. */
async function shortC (name: string, duration: number, connections: number, size: number,
  peer: string): Promise<ShortRun> {
  return withCServer(peer, 'echo', port => withProxy(name, port, async (port, measure) => {
    const { stdout } = await promisify(execFile)(peer, ['client', String(port), String(connections),
      String(duration), String(size)])
    const r = JSON.parse(stdout) as { connections: number, seconds: number, errors: number, p50: number, p99: number }
    const cpu = await measure()
    if (r.connections === 0) throw new Error(`${name}: no connection completed (${r.errors} failed)`)
    return shortRun(r.connections, r.seconds, r.p50, r.p99, cpu, r.errors ? { failed: r.errors } : {})
  }))
}

/**
 * Starts the C peer's server `mode` (echo or sink) and gives `run` its port
 * and `report`, which closes its stdin and returns the line it then prints.
 */
async function withCServer<T> (peer: string, mode: string,
  run: (port: number, report: () => Promise<string>) => Promise<T>): Promise<T> {
  const server = spawn(peer, [mode], { stdio: ['pipe', 'pipe', 'inherit'] })
  try {
    const lines = readline.createInterface({ input: server.stdout! })[Symbol.asyncIterator]()
    const port = Number((await lines.next()).value)
    return await run(port, async () => {
      server.stdin!.end()
      return (await lines.next()).value as string
    })
  } finally {
    server.kill()
  }
}

/** One short connection: send the message, half-close, expect it echoed back whole. */
async function exchange (port: number, message: Buffer): Promise<void> {
  const s = net.connect({ port, host: '127.0.0.1' })
  try {
    s.end(message)
    let got = 0
    s.on('data', (d: Buffer) => { got += d.length })
    await once(s, 'end')
    if (got !== message.length) throw Object.assign(new Error(`echoed ${got} of ${message.length}`), { code: 'SHORT' })
  } finally {
    s.destroy()
  }
}

/**
 * Starts `server` (the receiving peer), and unless the case is `direct` a
 * proxy process in front of it; gives `run` the port to connect to and a
 * function that returns the proxy's CPU time (microseconds) since `run` began.
 */
async function withPeers<T> (name: string, server: net.Server,
  run: (port: number, measure: () => Promise<NodeJS.CpuUsage>) => Promise<T>): Promise<T> {
  server.listen(0, '127.0.0.1', 1024)
  try {
    await once(server, 'listening')
    return await withProxy(name, (server.address() as net.AddressInfo).port, run)
  } finally {
    server.close()
  }
}

/** The proxy process for case `name` in front of `serverPort`, as withPeers. */
async function withProxy<T> (name: string, serverPort: number,
  run: (port: number, measure: () => Promise<NodeJS.CpuUsage>) => Promise<T>): Promise<T> {
  let child: ChildProcess | undefined
  try {
    if (name === 'direct') return await run(serverPort, async () => ({ user: 0, system: 0 }))
    child = fork(path.join(__dirname, 'bench-proxy.js'), [name, String(serverPort)], { stdio: 'ignore' })
    const [{ port }] = await once(child, 'message') as [{ port: number }]
    child.send('begin')
    await once(child, 'message')
    return await run(port, async () => {
      child!.send('end')
      return (await once(child!, 'message') as [{ cpu: NodeJS.CpuUsage }])[0].cpu
    })
  } finally {
    child?.kill()
  }
}

export function stat (values: number[]): Stat {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
  return { median, min: sorted[0], max: sorted[sorted.length - 1] }
}
