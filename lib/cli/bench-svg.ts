import type { BenchReport, CaseResult, Stat } from './bench-runner.js'

// The bench results as a horizontal bar chart in one self-contained SVG:
// a panel per workload and concurrency, a bar per case at its median, a
// whisker from min to max; and the proxy's CPU per GB, user then sys.

const width = 760
const labelWidth = 110
const barHeight = 18
const gap = 6
const colors: Record<string, string> = {
  pipe: '#2b7bb9', so_splice: '#2b7bb9', staged: '#7a5fb0', userspace: '#e08a1e', 'node-pipe': '#8c8c8c', direct: '#5a9e4b'
}

export function chart (report: BenchReport, options: { size: number, duration: number }, machine: string): string {
  const panels: [string, CaseResult<object>[], string, string][] = []
  const cpuPanels: [string, CaseResult<object>[]][] = []
  for (const [bulk, peers] of [[report.bulk, 'Node'], [report.bulkC, 'C']] as const) {
    for (const c of new Set(bulk.map(r => r.connections))) {
      const results = bulk.filter(r => r.connections === c)
      panels.push([`bulk: ${options.size} bytes over ${c} connection(s), ${peers} peers`, results, 'gbits', 'Gbit/s'])
      cpuPanels.push([`proxy CPU per GB, bulk over ${c} connection(s), ${peers} peers`,
        results.filter(r => r.name !== 'direct')])
    }
  }
  for (const [results, peers] of [[report.short, 'Node'], [report.shortC, 'C']] as const) {
    for (const c of new Set(results.map(r => r.connections))) {
      panels.push([`short connections, ${c} at a time, ${peers} peers, ${options.duration} s`,
        results.filter(r => r.connections === c), 'perSecond', 'connections/s'])
    }
  }
  let y = 28
  const body = [text(10, 18, `sosplice bench: ${machine}`, 'bold')]
  for (const [title, results, key, unit] of panels) {
    y += 14
    body.push(text(10, y, `${title} (${unit}, median and min-max)`, 'bold'))
    y += 8
    const top = Math.max(...results.map(r => r.stats[key].max))
    const scale = (v: number) => (v / top) * (width - labelWidth - 90)
    for (const r of results) {
      const s: Stat = r.stats[key]
      const mid = y + barHeight / 2
      body.push(
        text(10, mid + 4, r.name),
        `<rect x="${labelWidth}" y="${y}" width="${scale(s.median).toFixed(1)}" height="${barHeight}" fill="${colors[r.name.includes('-after-') ? 'staged' : r.name] ?? '#666'}"/>`,
        `<line x1="${(labelWidth + scale(s.min)).toFixed(1)}" x2="${(labelWidth + scale(s.max)).toFixed(1)}" y1="${mid}" y2="${mid}" stroke="#000"/>`,
        text(labelWidth + scale(s.max) + 6, mid + 4, s.median.toFixed(key === 'gbits' ? 2 : 0))
      )
      y += barHeight + gap
    }
  }
  for (const [title, results] of cpuPanels) {
    y += 14
    body.push(text(10, y, `${title} (seconds, median: user dark, sys light)`, 'bold'))
    y += 8
    const top = Math.max(...results.map(r => r.stats.userPerGB.median + r.stats.sysPerGB.median))
    const scale = (v: number) => (v / top) * (width - labelWidth - 140)
    for (const r of results) {
      const user = r.stats.userPerGB.median
      const sys = r.stats.sysPerGB.median
      body.push(
        text(10, y + barHeight / 2 + 4, r.name),
        `<rect x="${labelWidth}" y="${y}" width="${scale(user).toFixed(1)}" height="${barHeight}" fill="#444"/>`,
        `<rect x="${(labelWidth + scale(user)).toFixed(1)}" y="${y}" width="${scale(sys).toFixed(1)}" height="${barHeight}" fill="#bbb"/>`,
        text(labelWidth + scale(user + sys) + 6, y + barHeight / 2 + 4, `${user.toFixed(3)} + ${sys.toFixed(3)}`)
      )
      y += barHeight + gap
    }
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y + 10}" font-family="sans-serif" font-size="12">\n` +
    `<rect width="100%" height="100%" fill="#fff"/>\n${body.join('\n')}\n</svg>\n`
}

function text (x: number, y: number, content: string, weight = 'normal'): string {
  const escaped = content.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" font-weight="${weight}">${escaped}</text>`
}
