#!/usr/bin/env node
import { parseArgs } from 'node:util'
import { backends } from './backends.js'
import { bench, type CaseResult } from './bench.js'

const usage = `Usage: sosplice bench [options]

Compares, side by side in one run, each kernel backend this host has, the
userspace backend, a plain Node proxy (a.pipe(b); b.pipe(a)) and a direct
transfer with no proxy, over loopback. The proxy runs in its own process;
its CPU time is reported per GB (10^9 bytes) moved.

Options:
  --size BYTES      bytes per transfer, with an optional K, M or G suffix (default 512M)
  --runs N          repetitions of each case, in alternation (default 3)
  --backends LIST   comma-separated cases (default: ${[...backends(), 'node-pipe', 'direct'].join(',')})
  --json            print one JSON document instead of the table
  -h, --help        this text
`

function fail (message: string): never {
  process.stderr.write(`sosplice: ${message}\n\n${usage}`)
  process.exit(2)
}

function parseSize (text: string): number {
  const match = /^(\d+)([KMG]?)i?B?$/i.exec(text)
  if (!match) fail(`--size: not a size: ${text}`)
  const scale = { '': 1, K: 1 << 10, M: 1 << 20, G: 1 << 30 }[match[2].toUpperCase() as '' | 'K' | 'M' | 'G']
  const size = Number(match[1]) * scale
  if (size <= 0) fail('--size must be more than 0')
  return size
}

function table (results: CaseResult[]): string {
  const base = results.find(r => r.name === 'node-pipe')
  const rows = [['case', 'Gbit/s median (min-max)', 'user CPU s/GB', 'sys CPU s/GB', 'vs node-pipe']]
  for (const r of results) {
    const range = (s: { median: number, min: number, max: number }, d: number) =>
      `${s.median.toFixed(d)} (${s.min.toFixed(d)}-${s.max.toFixed(d)})`
    rows.push([
      r.name,
      range(r.gbits, 2),
      r.name === 'direct' ? '-' : range(r.userPerGB, 3),
      r.name === 'direct' ? '-' : range(r.sysPerGB, 3),
      base ? `${(r.gbits.median / base.gbits.median).toFixed(2)}x` : '-'
    ])
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map(row => row[i].length)))
  return rows.map(row => row.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd()).join('\n') + '\n'
}

async function main () {
  let parsed
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        size: { type: 'string', default: '512M' },
        runs: { type: 'string', default: '3' },
        backends: { type: 'string' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false }
      }
    })
  } catch (err) {
    fail((err as Error).message)
  }
  const { values, positionals } = parsed
  if (values.help) return process.stdout.write(usage)
  if (positionals[0] !== 'bench' || positionals.length > 1) fail(`unknown command: ${positionals.join(' ') || '(none)'}`)
  const runs = Number(values.runs)
  if (!Number.isSafeInteger(runs) || runs < 1) fail(`--runs must be a whole number >= 1, not ${values.runs}`)
  const known = [...backends(), 'node-pipe', 'direct']
  const cases = values.backends ? values.backends.split(',') : known
  for (const c of cases) if (!known.includes(c)) fail(`--backends: ${c} is not one of ${known.join(', ')}`)
  const size = parseSize(values.size!)
  const tty = process.stderr.isTTY && !values.json
  const results = await bench({
    size,
    runs,
    cases,
    progress: tty ? message => process.stderr.write(`\r\x1b[K${message}`) : undefined
  })
  if (tty) process.stderr.write('\r\x1b[K')
  if (values.json) {
    process.stdout.write(JSON.stringify({ size, runs, results }, null, 2) + '\n')
  } else {
    process.stdout.write(`${size} bytes per transfer, ${runs} runs each, loopback, one connection\n\n${table(results)}`)
  }
}

main().catch(err => {
  process.stderr.write(`sosplice: ${err.stack ?? err}\n`)
  process.exit(1)
})
