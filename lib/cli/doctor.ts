import os from 'node:os'
import { type BackendName, backends } from '../backends.js'
import { addonPath, installFailure, kernelPlatform, loadError, native } from '../native.js'
import { parseOptions } from './args.js'

export const usage = `Usage: sosplice doctor [--json]

Says which backends this host has and, for each one it lacks, why: the
platform has no such kernel path, the kernel lacks SO_SPLICE, or the addon
did not load (no prebuild for this host, and the compile's first error).

Options:
  --json      one JSON document instead of text
  -h, --help  this text

Exit codes: 0 when this host has every backend its platform can have,
1 when the platform has a kernel backend this install lacks.
`

type Kernel = Exclude<BackendName, 'userspace'>

/** The platforms each kernel backend exists on, and their names. */
const where: Record<Kernel, { platforms: string[], names: string }> = {
  pipe: { platforms: ['linux'], names: 'Linux' },
  so_splice: { platforms: ['freebsd', 'openbsd'], names: 'FreeBSD and OpenBSD' }
}

/** FreeBSD has had SO_SPLICE since 14.2. */
function freebsdLacksSplice (): boolean {
  const [major, minor] = os.release().split(/[.-]/).map(Number)
  return major < 14 || (major === 14 && minor < 2)
}

/** Why this host has no `name` backend. */
function missing (name: Kernel): string {
  if (!where[name].platforms.includes(process.platform)) {
    return `${name} is a kernel path of ${where[name].names} only, not of ${process.platform}`
  }
  if (process.platform === 'freebsd' && freebsdLacksSplice()) {
    return `the kernel (FreeBSD ${os.release()}) lacks SO_SPLICE, which came in FreeBSD 14.2`
  }
  const failure = installFailure()
  if (failure) return `no prebuild (${failure.prebuild}), and compiling failed: ${failure.compile}`
  return `the addon did not load: ${loadError?.message.split('\n')[0]}`
}

function libc (): string | undefined {
  if (process.platform !== 'linux') return undefined
  const { header } = process.report.getReport() as { header: { glibcVersionRuntime?: string } }
  return header.glibcVersionRuntime ? `glibc ${header.glibcVersionRuntime}` : 'musl'
}

export async function main (args: string[]): Promise<number> {
  const { values } = parseOptions(args, { json: { type: 'boolean' } })
  const host = backends()
  const lacking = Object.fromEntries((['so_splice', 'pipe'] as const)
    .filter(name => !host.includes(name)).map(name => [name, missing(name)]))
  const report = {
    platform: process.platform,
    arch: process.arch,
    libc: libc(),
    node: process.version,
    addon: addonPath ?? null,
    backends: host,
    missing: lacking
  }
  if (values.json) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n')
  } else {
    const lines = [
      `${report.platform}-${report.arch}${report.libc ? ` (${report.libc})` : ''}, Node ${report.node}`,
      `addon: ${report.addon ?? 'not loaded'}`,
      `backends, best first: ${host.join(', ')}`,
      ...Object.entries(lacking).map(([name, why]) => `no ${name}: ${why}`)
    ]
    process.stdout.write(lines.join('\n') + '\n')
  }
  return kernelPlatform && !native ? 1 : 0
}
