import { systemError } from './errors.js'
import { Flag, native, type NativeHandle, Reason } from './native.js'
import { checkFd, checkLimits, type Limits } from './options.js'
import { type EndReason, reasonNames } from './splice.js'

// The kernel's own interface, on descriptors: setsockopt(SO_SPLICE) and
// getsockopt(SO_SPLICE). The caller owns the descriptors and must unsplice
// before closing them: the engine's duplicates keep the connection open.

export interface FdSpliceResult {
  /** Bytes that reached the drain. */
  bytes: number
  reason: EndReason
  error?: Error
  /**
   * Bytes that had left the source but that the drain had not taken when
   * the splice ended (Linux: they were in the engine's pipe). Yours to
   * write; empty where the kernel leaves them in the source (BSD).
   */
  residual: Buffer
}

interface Entry {
  /** The socket the descriptor named when it was spliced. */
  identity: string
  handle: NativeHandle
  result?: FdSpliceResult
  done: Promise<FdSpliceResult>
}

// The current or last splice of each source descriptor.
const bySource = new Map<number, Entry>()

function addon () {
  if (!native) throw systemError('EPROTONOSUPPORT', 'setsockopt', 'no kernel splicing on this host')
  return native
}

/**
 * The splice of `fd`, if `fd` still names the socket that was spliced: a
 * descriptor closed and reused for another socket is a stranger to it.
 * Throws EBADF for a closed descriptor, ENOTSOCK for one that is no socket.
 */
function entryOf (fd: number): Entry | undefined {
  const identity = addon().identity(fd)
  const entry = bySource.get(fd)
  if (entry?.identity === identity) return entry
  bySource.delete(fd)
  return undefined
}

/**
 * Splices `sourceFd` into `drainFd`, or unsplices it when `drainFd` is -1.
 * Returns a promise (never rejected) of how the splice ended; an unsplice
 * returns that of the splice it ends.
 */
export function setSplice (sourceFd: number, drainFd: number, options?: Limits): Promise<FdSpliceResult> {
  checkFd('sourceFd', sourceFd)
  const { max, idle } = checkLimits(options)
  const binding = addon()
  const current = entryOf(sourceFd)
  if (drainFd === -1) {
    if (!current || current.result) throw systemError('ENOTCONN', 'setsockopt', 'the source is not spliced')
    binding.stop(current.handle, Reason.Unsplice)
    return current.done
  }
  checkFd('drainFd', drainFd)
  if (current && !current.result) throw systemError('EBUSY', 'setsockopt', 'the source is already spliced')
  let settle!: (result: FdSpliceResult) => void
  const done = new Promise<FdSpliceResult>(resolve => { settle = resolve })
  const handle = binding.start(sourceFd, drainFd, max, 0, idle, Flag.Flow0 | Flag.Residual, (_, bytes, reason, error, residual) => {
    entry.result = { bytes, reason: reasonNames[reason], residual: residual ?? Buffer.alloc(0) }
    if (error) entry.result.error = error
    settle(entry.result)
  })
  const entry: Entry = { identity: binding.identity(sourceFd), handle, done }
  binding.run(handle)
  bySource.set(sourceFd, entry)
  return done
}

/** Bytes moved by the current or last splice of `sourceFd`. */
export function getSplice (sourceFd: number): number {
  checkFd('sourceFd', sourceFd)
  const entry = entryOf(sourceFd)
  if (!entry) return 0
  return entry.result?.bytes ?? addon().bytes(entry.handle, 0)
}
