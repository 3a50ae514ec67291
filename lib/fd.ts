import { systemError } from './errors.js'
import { native, type NativeHandle, Reason } from './native.js'
import { checkFd, checkLimits, type Limits } from './options.js'

// The kernel's own interface, on descriptors: setsockopt(SO_SPLICE) and
// getsockopt(SO_SPLICE). The caller owns the descriptors and must unsplice
// before closing them. An unsplice or an idle end delivers what is in flight
// to the drain before the splice ends.

interface Entry {
  handle: NativeHandle
  bytes: number
  ended: boolean
}

// The current or last splice of each source descriptor.
const bySource = new Map<number, Entry>()

function addon () {
  if (!native) throw systemError('EPROTONOSUPPORT', 'setsockopt', 'no kernel splicing on this host')
  return native
}

/** Splices `sourceFd` into `drainFd`, or unsplices it when `drainFd` is -1. */
export function setSplice (sourceFd: number, drainFd: number, options?: Limits): void {
  checkFd('sourceFd', sourceFd)
  const { max, idle } = checkLimits(options)
  const binding = addon()
  const current = bySource.get(sourceFd)
  if (drainFd === -1) {
    if (!current || current.ended) throw systemError('ENOTCONN', 'setsockopt', 'the source is not spliced')
    binding.stop(current.handle, Reason.Unsplice)
    return
  }
  checkFd('drainFd', drainFd)
  const entry = { bytes: 0, ended: false } as Entry
  entry.handle = binding.start(sourceFd, drainFd, max, idle, false, bytes => {
    entry.bytes = bytes
    entry.ended = true
  })
  binding.run(entry.handle)
  bySource.set(sourceFd, entry)
}

/** Bytes moved by the current or last splice of `sourceFd`. */
export function getSplice (sourceFd: number): number {
  checkFd('sourceFd', sourceFd)
  const entry = bySource.get(sourceFd)
  if (!entry) return 0
  return entry.ended ? entry.bytes : addon().bytes(entry.handle)
}
