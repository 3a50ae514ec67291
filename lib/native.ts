import path from 'node:path'

// The addon's interface (src/binding.cc). It moves bytes and reports ends;
// everything else is decided in lib/.

/** Why a splice ended; the numbers are src/splice.h's. */
export const enum Reason { Eof = 1, Max = 2, Idle = 3, Unsplice = 4, Error = 5, Close = 6 }

export type NativeHandle = { readonly __brand: 'sosplice.NativeHandle' }

export type NativeEnd = (bytes: number, reason: Reason, error: Error | undefined,
  residual: Buffer | undefined) => void

export interface NativeStats {
  workers: number
  /** Live splices. */
  splices: number
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
  /** Holds the sockets (and keeps the loop alive) until run() or stop(): call one of them. */
  start (sourceFd: number, drainFd: number, max: number, idle: number,
    returnResidual: boolean, onEnd: NativeEnd): NativeHandle
  run (handle: NativeHandle): void
  stop (handle: NativeHandle, reason: Reason.Unsplice | Reason.Close): void
  bytes (handle: NativeHandle): number
  ref (handle: NativeHandle, on: boolean): void
  stats (): NativeStats
  /** The socket `fd` refers to, as "<st_dev>:<st_ino>": equal for every descriptor of one socket. */
  identity (fd: number): string
}

/** Why the addon could not be loaded, when it could not. */
export let loadError: Error | undefined

function load (): NativeBinding | undefined {
  try {
    const nodeGypBuild: (dir: string) => NativeBinding = require('node-gyp-build')
    return nodeGypBuild(path.join(__dirname, '..', '..'))
  } catch (err) {
    // No build for this host: the userspace backend still works.
    loadError = err as Error
    return undefined
  }
}

export const native = load()
