import type net from 'node:net'
import type { Mover, MoverEnd, StartMover } from './mover.js'
import { Reason } from './native.js'

/**
 * Moves the first `after` bytes with `first`, then hands the sockets to
 * `then` for the rest. A kernel splice costs a hand-over to a worker thread
 * and back, which a short connection does not earn back: copying its few
 * bytes in JavaScript is cheaper, and a connection that ends in fewer than
 * `after` bytes never reaches the kernel. `first` ends with reason Max at
 * `after`, leaving any bytes past it in the source for `then` to deliver
 * first. `check` throws at once for sockets `then` could never take; if
 * `then` refuses them at the hand-over for want of resources or for their
 * state, `first` goes on.
 */
const fallbackCodes = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'EAGAIN', 'ENOTCONN'])

export function stagedMover (first: StartMover, then: StartMover, after: number,
  check: (source: net.Socket, drain: net.Socket) => void): StartMover {
  return (source, drain, max, idle, onEnd) => {
    check(source, drain)
    const firstMax = max > 0 ? Math.min(max, after) : after
    let earlier = 0
    let refed = true
    let current: Mover | undefined
    const moving = first(source, drain, firstMax, idle, end => {
      if (end.reason !== Reason.Max || firstMax === max) return onEnd(end)
      earlier = end.bytes
      const rest = max > 0 ? max - earlier : 0
      const onRest = (last: MoverEnd) => onEnd({ ...last, bytes: earlier + last.bytes })
      try {
        current = then(source, drain, rest, idle, onRest)
      } catch (error) {
        // Refused for want of resources, or for a socket state the check
        // cannot see: the sockets are Node's again, and `first` moves the
        // rest. Anything else (a socket another splice holds) ends it here.
        if (!fallbackCodes.has((error as NodeJS.ErrnoException).code!)) {
          return onEnd({ bytes: earlier, reason: Reason.Error, error: error as Error })
        }
        current = first(source, drain, rest, idle, onRest)
      }
      if (!refed) current.ref(false)
    })
    current ??= moving
    return {
      get bytes () { return earlier + current!.bytes },
      stop (reason, error) { current!.stop(reason, error) },
      ref (on) {
        refed = on
        current!.ref(on)
      }
    }
  }
}
