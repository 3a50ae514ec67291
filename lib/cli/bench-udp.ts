import { type ChildProcess, execFile, fork, spawn } from 'node:child_process'
import { once } from 'node:events'
import path from 'node:path'
import readline from 'node:readline'
import { promisify } from 'node:util'
import { type Stat, stat } from './bench-runner.js'

// UDP relays side by side: for each datagram size, a C sender sends
// datagrams for `duration` seconds, as fast as it can or at `rate`, through
// the relay (in its own process) to a C receiver, each case in alternation
// `runs` times. `direct` is the
// ceiling: sender to receiver with no relay. Loss is what the sender sent
// and the receiver never got: UDP has no flow control, so a relay slower
// than the sender drops the rest at its socket's receive buffer.

export interface UdpRun {
  perSecond: number
  gbits: number
  /** Relay CPU (user + system) seconds per million datagrams received. */
  cpuPerMillion: number
  /** Fraction of the datagrams sent that never arrived. */
  loss: number
}

export interface UdpResult {
  name: string
  size: number
  runs: UdpRun[]
  stats: Record<keyof UdpRun, Stat>
}

export interface UdpBenchOptions {
  sizes: number[]
  duration: number
  /** Datagrams a second the sender keeps to; 0: as fast as it can. */
  rate: number
  runs: number
  cases: string[]
  /** The compiled bench/peer.c. */
  peer: string
  progress?: (message: string) => void
}

export async function benchUdp (options: UdpBenchOptions): Promise<UdpResult[]> {
  const results: UdpResult[] = []
  for (const size of options.sizes) {
    const runs = new Map(options.cases.map(name => [name, [] as UdpRun[]]))
    for (let run = 1; run <= options.runs; run++) {
      for (const name of options.cases) {
        options.progress?.(`udp, ${size}-byte datagrams, run ${run}/${options.runs}: ${name}`)
        runs.get(name)!.push(await udpRun(name, size, options.duration, options.rate, options.peer))
      }
    }
    for (const [name, list] of runs) {
      const stats = Object.fromEntries((Object.keys(list[0]) as (keyof UdpRun)[])
        .map(k => [k, stat(list.map(r => r[k]))])) as Record<keyof UdpRun, Stat>
      results.push({ name, size, runs: list, stats })
    }
  }
  return results
}

async function udpRun (name: string, size: number, duration: number, rate: number, peer: string): Promise<UdpRun> {
  const receiver = spawn(peer, ['udp-recv'], { stdio: ['pipe', 'pipe', 'inherit'] })
  let relay: ChildProcess | undefined
  try {
    const lines = readline.createInterface({ input: receiver.stdout! })[Symbol.asyncIterator]()
    const receiverPort = Number((await lines.next()).value)
    let port = receiverPort
    if (name !== 'direct') {
      relay = fork(path.join(__dirname, 'bench-udp-relay.js'), [name, String(receiverPort)], { stdio: 'ignore' })
      port = (await once(relay, 'message') as [{ port: number }])[0].port
      relay.send('begin')
      await once(relay, 'message')
    }
    const { stdout } = await promisify(execFile)(peer, ['udp-send', String(port), String(size), String(duration), String(rate)])
    const sent = JSON.parse(stdout) as { datagrams: number, bytes: number, seconds: number }
    // What is still on its way arrives within this.
    await new Promise(resolve => setTimeout(resolve, 200))
    let cpu = { user: 0, system: 0 }
    if (relay) {
      relay.send('end')
      cpu = (await once(relay, 'message') as [{ cpu: NodeJS.CpuUsage }])[0].cpu
    }
    receiver.stdin!.end()
    const got = JSON.parse((await lines.next()).value) as { datagrams: number, bytes: number }
    if (got.datagrams === 0) throw new Error(`udp ${name}: nothing arrived of ${sent.datagrams} datagrams`)
    return {
      perSecond: got.datagrams / sent.seconds,
      gbits: got.bytes * 8 / sent.seconds / 1e9,
      cpuPerMillion: relay ? (cpu.user + cpu.system) / 1e6 / (got.datagrams / 1e6) : 0,
      loss: 1 - got.datagrams / sent.datagrams
    }
  } finally {
    relay?.kill()
    receiver.kill()
  }
}
