import { parseArgs, type ParseArgsConfig } from 'node:util'

// What every sosplice command shares: argument errors end the process with
// exit code 2 and the command's usage; values are parsed strictly.

export class UsageError extends Error {}

export function fail (message: string): never {
  throw new UsageError(message)
}

type Options = NonNullable<ParseArgsConfig['options']>
type Config<O extends Options> = { args: string[], options: O, allowPositionals: false, strict: true }

export function parseOptions<O extends Options> (args: string[], options: O): ReturnType<typeof parseArgs<Config<O>>> {
  try {
    return parseArgs<Config<O>>({ args, options, allowPositionals: false, strict: true })
  } catch (err) {
    fail((err as Error).message)
  }
}

/** A byte count such as 1048576, 64K, 512M or 1G (powers of 1024), at least `min`. */
export function parseSize (name: string, text: string, min = 1): number {
  const match = /^(\d+)([KMG]?)i?B?$/i.exec(text)
  if (!match) fail(`${name}: not a size: ${text}`)
  const scale = { '': 1, K: 1 << 10, M: 1 << 20, G: 1 << 30 }[match[2].toUpperCase() as '' | 'K' | 'M' | 'G']
  const size = Number(match[1]) * scale
  if (!Number.isSafeInteger(size)) fail(`${name} must be at most ${Number.MAX_SAFE_INTEGER} bytes, not ${text}`)
  if (size < min) fail(`${name} must be at least ${min} byte${min === 1 ? '' : 's'}, not ${text}`)
  return size
}

/** The shortest exact spelling of `size` that parseSize reads back. */
export function formatSize (size: number): string {
  for (const [suffix, scale] of [['G', 1 << 30], ['M', 1 << 20], ['K', 1 << 10]] as const) {
    if (size % scale === 0) return `${size / scale}${suffix}`
  }
  return String(size)
}

export function parseWhole (name: string, text: string, min = 1, max = Number.MAX_SAFE_INTEGER): number {
  const n = /^\d+$/.test(text) ? Number(text) : NaN
  if (!Number.isSafeInteger(n) || n < min) fail(`${name} must be a whole number >= ${min}, not ${text}`)
  if (n > max) fail(`${name} must be at most ${max}, not ${text}`)
  return n
}

/** '[host:]port' or 'host:port' (IPv6 hosts in brackets: [::1]:8080). */
export function parseAddress (name: string, text: string, hostRequired: boolean): { host?: string, port: number } {
  const match = /^(?:(\[[0-9a-fA-F:.]+\]|[^:[\]]+):)?(\d+)$/.exec(text)
  if (!match || (hostRequired && !match[1])) {
    fail(`${name}: expected ${hostRequired ? 'host:port' : '[host:]port'}, not ${text}`)
  }
  const port = Number(match[2])
  if (port > 65535) fail(`${name}: port ${port} is out of range 0-65535`)
  const host = match[1]?.replace(/^\[(.*)\]$/, '$1')
  return { host, port }
}

/** host:port, an IPv6 host in brackets. */
export function hostPort (host: string | undefined, port: number | undefined): string {
  return `${host?.includes(':') ? `[${host}]` : host}:${port}`
}
