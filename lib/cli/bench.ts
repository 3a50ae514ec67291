import { writeFileSync } from 'node:fs'
import os from 'node:os'
import { backends } from '../backends.js'
import { autoSpliceAfter } from '../options.js'
import { compilePeer } from './bench-peer.js'
import { bench, type BenchReport, type CaseResult, type Stat } from './bench-runner.js'
import { benchUdp, type UdpResult } from './bench-udp.js'
import { chart } from './bench-svg.js'
import { fail, formatSize, parseOptions, parseSize, parseWhole } from './args.js'

const kernels = () => backends().filter(b => b !== 'userspace')
const cases = (after: number) => [...kernels(), ...(after > 0 ? kernels().map(k => `${k}-after-${formatSize(after)}`) : []),
  'default', 'userspace', 'node-pipe', 'direct']
const udpCases = () => [...backends().filter(b => b === 'pipe'), 'userspace', 'node-relay', 'direct']

export const usage = `Usage: sosplice bench [options]

Compares, side by side in one run, proxy() on each kernel backend this host
has from the first byte (and staged, when --splice-after is given: the first
bytes of each direction copied in JavaScript, then spliced), proxy() with
default options (backend 'auto': ${formatSize(autoSpliceAfter)} copied first), the
userspace backend, a plain Node proxy (a.pipe(b); b.pipe(a)) and a direct
transfer with no proxy, over loopback. The proxy runs in its own process;
its user and system CPU time are reported per GB (10^9 bytes) moved and per
short connection. Each case runs in alternation with the others; figures are
medians over the runs, with min-max.

Workloads, at each --connections level:
  bulk    --size bytes in all, shared over the connections (throughput)
  short   for --duration seconds, each connection slot opens a connection,
          sends --message bytes, reads them echoed back, closes (connections/s,
          latency)
Each once with Node peers, once with C peers (bench/peer.c, built with $CC
or cc; left out, and said so, without a compiler).

Options:
  --size BYTES          bulk bytes per run, with an optional K, M or G suffix (default 1G)
  --connections LIST    comma-separated concurrency levels (default 1,64)
  --duration SECONDS    short-connection time per run; 0 skips that workload (default 1)
  --message BYTES       bytes each way per short connection (default 1K)
  --peers LIST          the workloads' peers: node, c or both (default node,c)
  --runs N              repetitions of each case (default 3)
  --splice-after BYTES  adds the staged cases, with this threshold (default: none)
  --backends LIST       comma-separated cases (default: ${cases(0).join(',')})
  --udp                 UDP relays instead (splice() of two UDP sockets): for each
                        of --sizes, a C sender (bench/peer.c) sends datagrams
                        as fast as it can for --duration seconds (default 2
                        here) through the relay to a C receiver; datagrams/s,
                        Gbit/s, relay CPU per million datagrams and loss, for
                        ${udpCases().join(', ')}
                        (node-relay: on('message') then send(); direct: no relay)
  --sizes LIST          --udp datagram sizes in bytes (default 64,512,1400)
  --rate N              --udp: the sender keeps to N datagrams a second (default:
                        as fast as it can); below what a relay keeps up with,
                        its loss is 0
  --json                print one JSON document instead of the tables
  --svg FILE            also write a bar chart of the results to FILE
  -h, --help            this text
`

export async function main (args: string[]): Promise<number> {
  const { values } = parseOptions(args, {
    size: { type: 'string', default: '1G' },
    connections: { type: 'string', default: '1,64' },
    duration: { type: 'string' },
    message: { type: 'string', default: '1K' },
    peers: { type: 'string', default: 'node,c' },
    runs: { type: 'string', default: '3' },
    'splice-after': { type: 'string', default: '0' },
    backends: { type: 'string' },
    udp: { type: 'boolean', default: false },
    sizes: { type: 'string', default: '64,512,1400' },
    rate: { type: 'string', default: '0' },
    json: { type: 'boolean', default: false },
    svg: { type: 'string' }
  })
  if (values.udp) return udp(values)
  const after = parseSize('--splice-after', values['splice-after'], 0)
  const known = cases(after)
  const chosen = values.backends?.split(',') ?? known
  for (const c of chosen) if (!known.includes(c)) fail(`--backends: ${c} is not one of ${known.join(', ')}`)
  const duration = parseDuration(values.duration ?? '1')
  const peers = values.peers.split(',')
  for (const p of peers) if (p !== 'node' && p !== 'c') fail(`--peers: ${p} is not node or c`)
  let peer: string | undefined
  if (peers.includes('c')) {
    const compiled = compilePeer()
    peer = compiled.peer
    if (!peer) process.stderr.write(`sosplice bench: the workloads with C peers left out: no C peer (${compiled.why})\n`)
  }
  const options = {
    size: parseSize('--size', values.size),
    connections: values.connections.split(',').map(c => parseWhole('--connections', c)),
    duration,
    nodePeers: peers.includes('node'),
    message: parseSize('--message', values.message),
    peer,
    runs: parseWhole('--runs', values.runs),
    cases: chosen
  }
  const tty = process.stderr.isTTY && !values.json
  const report = await bench({
    ...options,
    progress: tty ? message => process.stderr.write(`\r\x1b[K${message}`) : undefined
  })
  if (tty) process.stderr.write('\r\x1b[K')
  if (values.svg) writeFileSync(values.svg, chart(report, options, machine()))
  if (values.json) {
    process.stdout.write(JSON.stringify({ ...options, machine: machine(), ...report }, null, 2) + '\n')
  } else {
    process.stdout.write(`${machine()}; loopback; ${options.runs} runs of each case\n`)
    process.stdout.write(tables(report, options.size, options.message))
  }
  return 0
}

function parseDuration (text: string): number {
  const duration = Number(text)
  if (!(duration >= 0 && duration <= 3600)) fail(`--duration must be a number of seconds from 0 to 3600, not ${text}`)
  return duration
}

function machine (): string {
  return `${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim()}), ${os.type()} ${os.release()}, Node ${process.version}`
}

async function udp (values: { sizes: string, rate: string, duration?: string, runs: string, backends?: string,
  json: boolean }): Promise<number> {
  const known = udpCases()
  const chosen = values.backends?.split(',') ?? known
  for (const c of chosen) if (!known.includes(c)) fail(`--backends: ${c} is not one of ${known.join(', ')}`)
  const sizes = values.sizes.split(',').map(s => parseWhole('--sizes', s, 0, 65507))
  const duration = parseDuration(values.duration ?? '2')
  if (duration === 0) fail('--duration must be more than 0 with --udp')
  const { peer, why } = compilePeer()
  if (!peer) {
    process.stderr.write(`sosplice bench: --udp needs its C peers, which did not build: ${why}\n`)
    return 1
  }
  const rate = parseWhole('--rate', values.rate, 0)
  const options = { sizes, duration, rate, runs: parseWhole('--runs', values.runs), cases: chosen, peer }
  const tty = process.stderr.isTTY && !values.json
  const results = await benchUdp({ ...options, progress: tty ? m => process.stderr.write(`\r\x1b[K${m}`) : undefined })
  if (tty) process.stderr.write('\r\x1b[K')
  if (values.json) {
    process.stdout.write(JSON.stringify({ ...options, machine: machine(), udp: results }, null, 2) + '\n')
    return 0
  }
  process.stdout.write(`${machine()}; loopback; ${options.runs} runs of each case\n`)
  for (const size of sizes) {
    const rows = results.filter(r => r.size === size)
    const base = rows.find(r => r.name === 'node-relay')
    const ratio = (r: UdpResult) => base ? `${(r.stats.perSecond.median / base.stats.perSecond.median).toFixed(2)}x` : '-'
    const pace = rate ? `at ${rate} datagrams/s` : 'at full speed'
    process.stdout.write(`\nudp: ${size}-byte datagrams, ${duration} s of a C sender ${pace}, one flow\n\n` + grid([
      ['case', 'datagrams/s', 'Gbit/s', 'relay CPU s/M datagrams', 'loss', 'vs node-relay'],
      ...rows.map(r => [r.name, range(r.stats.perSecond, 0), range(r.stats.gbits, 2),
        r.name === 'direct' ? '-' : range(r.stats.cpuPerMillion, 2), `${(r.stats.loss.median * 100).toFixed(2)}%`, ratio(r)])
    ]))
  }
  return 0
}

function tables (report: BenchReport, size: number, message: number): string {
  let out = ''
  for (const [results, peers] of [[report.bulk, 'Node peers'], [report.bulkC, 'C peers']] as const) {
    for (const connections of new Set(results.map(r => r.connections))) {
      const rows = results.filter(r => r.connections === connections)
      out += `\nbulk: ${size} bytes over ${connections} connection(s), ${peers}\n\n` + table(rows, 'gbits', [
        ['Gbit/s', r => range(r.stats.gbits, 2)],
        ['user CPU s/GB', r => r.name === 'direct' ? '-' : range(r.stats.userPerGB, 3)],
        ['sys CPU s/GB', r => r.name === 'direct' ? '-' : range(r.stats.sysPerGB, 3)]
      ])
    }
  }
  for (const [results, peers] of [[report.short, 'Node peers'], [report.shortC, 'C peers']] as const) {
    for (const connections of new Set(results.map(r => r.connections))) {
      const rows = results.filter(r => r.connections === connections)
      out += `\nshort: ${message}-byte exchanges, ${connections} at a time, ${peers}\n\n` + table(rows, 'perSecond', [
        ['conn/s', r => range(r.stats.perSecond, 0)],
        ['p50 ms', r => r.stats.p50.median.toFixed(2)],
        ['p99 ms', r => r.stats.p99.median.toFixed(2)],
        ['user CPU us/conn', r => r.name === 'direct' ? '-' : range(r.stats.userPerConnection, 0)],
        ['sys CPU us/conn', r => r.name === 'direct' ? '-' : range(r.stats.sysPerConnection, 0)],
        ['errors', r => String(r.runs.reduce((n, run) => n + Object.values(run.errors).reduce((a, b) => a + b, 0), 0))]
      ])
    }
  }
  return out
}

function range (s: Stat, digits: number): string {
  return `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}-${s.max.toFixed(digits)})`
}

/** Columns, then the ratio of `key`'s median to the node-pipe row's. */
function table<R extends CaseResult<object>> (results: R[], key: string,
  columns: [string, (r: R) => string][]): string {
  const base = results.find(r => r.name === 'node-pipe')
  const ratio = (r: R) => base ? `${(r.stats[key].median / base.stats[key].median).toFixed(2)}x` : '-'
  return grid([
    ['case', ...columns.map(c => c[0]), 'vs node-pipe'],
    ...results.map(r => [r.name, ...columns.map(c => c[1](r)), ratio(r)])
  ])
}

/** Rows of cells as aligned columns. */
function grid (rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map(row => row[i].length)))
  return rows.map(row => row.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd()).join('\n') + '\n'
}
