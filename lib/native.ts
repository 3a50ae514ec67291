import fs from 'node:fs'
import path from 'node:path'

// The addon's interface (src/binding.cc). It moves bytes and reports ends;
// everything else is decided in lib/.

/** Why a flow ended; the numbers are src/splice.h's. */
export const enum Reason { Eof = 1, Max = 2, Idle = 3, Unsplice = 4, Error = 5, Close = 6 }

/** start()'s flags; the numbers are src/binding.cc's. */
export const enum Flag {
  /** Flow 0 (fd0 into fd1) runs. */
  Flow0 = 1,
  Flow1 = 2,
  /** After flow 0's EOF the engine shuts fd1's write side, where it can (Linux). */
  End0 = 4,
  End1 = 8,
  /** Node sockets, checked in JavaScript: the engine only identifies them. */
  Checked = 16,
  /** Bytes in flight at an end come back as `residual`. */
  Residual = 32,
  /** Start moving at once, with no run() call. */
  Run = 64,
  /** With Checked: Node UDP sockets, the drains connected. */
  Datagram = 128
}

/** A relay in the engine: one or two flows between two sockets. */
export type NativeHandle = { readonly __brand: 'sosplice.NativeHandle' }

/** Called once per flow; with both, an EOF may come with the other flow's end. */
export type NativeEnd = (flow: 0 | 1, bytes: number, reason: Reason, error: Error | undefined,
  residual: Buffer | undefined, datagrams: number) => void

export interface NativeStats {
  workers: number
  /** Live relays (a splice or a proxied connection each). */
  relays: number
  /** Idle pipes kept for reuse. */
  pooledPipes: number
  /** Descriptors the engine holds for itself, whatever the splices. */
  descriptors: number
  /** Linux: pipes open, in use or pooled. */
  pipes: number
  /** Linux: their total capacity, in bytes. */
  pipeBytes: number
  /** Linux: the capacity the engine keeps its pipes within (half the per-user limit). */
  pipeBudget: number
  /** Linux: pipe resizes the kernel refused (the per-user limit reached). */
  pipeResizesRefused: number
  /** Linux: new pipes left smaller than the engine wanted. */
  pipesUndersized: number
}

export interface NativeBinding {
  readonly backend: 'pipe' | 'so_splice'
  /**
   * Holds the sockets (and keeps the loop alive) until run() or stop(): call
   * one of them, unless `flags` has Run. `max0`, `max1`: each flow's limit.
   * `prefix0`, `prefix1` (pipe only): bytes for each flow's drain ahead of
   * its source's, counted in its bytes but not against its limit.
   */
  start (fd0: number, fd1: number, max0: number, max1: number, idle: number, flags: number,
    onEnd: NativeEnd, prefix0?: Buffer, prefix1?: Buffer): NativeHandle
  run (handle: NativeHandle): void
  /** Ends every flow still going. */
  stop (handle: NativeHandle, reason: Reason.Unsplice | Reason.Close): void
  bytes (handle: NativeHandle, flow: 0 | 1): number
  ref (handle: NativeHandle, on: boolean): void
  stats (): NativeStats
  /** The socket `fd` refers to, as "<st_dev>:<st_ino>": equal for every descriptor of one socket. */
  identity (fd: number): string
  /**
   * A connected UDP socket's datagrams that came before its connect()
   * (src/strays.h), in two steps that never wait. sendMarker() connects it
   * to a marker for the moment and returns where it goes back to, opaque;
   * takeStrays() reads, in order, what is queued ahead of the marker, and
   * once it has the marker (or with `force` once the queue is empty)
   * connects the socket back: `done`. A failure comes as `error`, with the
   * strays read before it. Done by force, it gives the marker's address:
   * the marker may still come.
   */
  sendMarker (fd: number): Buffer
  takeStrays (fd: number, back: Buffer, force: boolean): {
    strays: Stray[]
    done: boolean
    error?: Error
    marker?: { address: string, port: number }
  }
}

export interface Stray {
  data: Buffer
  address: string
  family: 'IPv4' | 'IPv6'
  port: number
}

const root = path.join(__dirname, '..', '..')

/** Where the addon gives a kernel backend; elsewhere only userspace exists. */
export const kernelPlatform = ['linux', 'freebsd', 'openbsd'].includes(process.platform)

/** What scripts/install.js wrote when neither a prebuild nor a compile gave an addon. */
export interface InstallFailure {
  target: string
  node: string
  /** Why no prebuild loaded. */
  prebuild: string
  /** The compile's first error line. */
  compile: string
}

export function installFailure (): InstallFailure | undefined {
  try {
    return JSON.parse(fs.readFileSync(path.join(root, 'build', 'install-error.json'), 'utf8'))
  } catch {
    return undefined
  }
}

/** Why the addon could not be loaded, when it could not. */
export let loadError: Error | undefined

/** The file the addon was loaded from, when it was. */
export let addonPath: string | undefined

function load (): NativeBinding | undefined {
  try {
    const nodeGypBuild: { path (dir: string): string } = require('node-gyp-build')
    const file = nodeGypBuild.path(root)
    const binding: NativeBinding = require(file)
    addonPath = file
    return binding
  } catch (err) {
    // No build for this host: the userspace backend still works.
    loadError = err as Error
    return undefined
  }
}

export const native = load()

// Where a kernel backend was expected, running without it is never silent.
if (!native && kernelPlatform) {
  const failure = installFailure()
  const why = failure ? `no prebuild, and compiling failed: ${failure.compile}` : loadError?.message.split('\n')[0]
  process.emitWarning(`sosplice: the native addon did not load (${why}); only the userspace backend is ` +
    'available, with no zero-copy splicing. `npx sosplice doctor` tells more.', { code: 'SOSPLICE_NO_ADDON' })
}
