import type net from 'node:net'
import type { Mover, StartMover } from './mover.js'
import { Reason } from './native.js'

/**
 * Moves the first `after` bytes with `first`, then hands the sockets to
 * `then` for the rest. A kernel splice costs a hand-over to a worker thread
 * and back, which a short connection does not earn back: copying its few
 * bytes in JavaScript is cheaper, and a connection that ends in fewer than
 * `after` bytes never reaches the kernel. `first` ends with reason Max at
 * `after`, leaving any bytes past it in the source for `then` to deliver
 * first. `check` throws at once for sockets `then` could never take; what
 * else `then` refuses ends the splice with an error at the hand-over.
 */
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
      try {
        current = then(source, drain, max > 0 ? max - earlier : 0, idle,
          rest => onEnd({ ...rest, bytes: earlier + rest.bytes }))
      } catch (error) {
        // The sockets are Node's again; the splice ends where the first stage did.
        return onEnd({ bytes: earlier, reason: Reason.Error, error: error as Error })
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
