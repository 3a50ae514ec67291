import { fdOf, holdReading, keepTimeoutsAlive, takeBuffered, writeFlushed } from './handover.js'
import type { Mover, MoverEnd, StartMover } from './mover.js'
import { type NativeBinding, type NativeHandle, Reason } from './native.js'

/**
 * Moves bytes with the addon (`pipe` on Linux, `so_splice` on BSD). Throws at
 * once for sockets the addon refuses. Order of delivery: what Node already
 * buffered from the source and what is queued on the drain, then the
 * kernel's bytes, then whatever was still in flight when it ended.
 */
export function kernelMover (native: NativeBinding): StartMover {
  return (source, drain, max, idle, onEnd) => {
    const hold = holdReading(source)
    // Node's buffered bytes count against max; if they reach it the kernel
    // is never involved.
    const head = max > 0 ? Math.min(max, source.readableLength) : source.readableLength
    const remaining = max > 0 ? max - head : 0
    let handle: NativeHandle | undefined
    if (max === 0 || remaining > 0) {
      try {
        handle = native.start(fdOf(source), fdOf(drain), remaining, idle, true, nativeEnd)
      } catch (err) {
        hold.release()
        throw err
      }
    }
    const prefix = takeBuffered(source, head)
    let stopped: { reason: Reason, error?: Error } | undefined
    // Until Node's bytes are out the kernel has not started: a stop ends the
    // splice there and then, and so does a drain that has not taken them
    // within `idle` ms. They stay queued on the drain, counted.
    let flushing = true
    const flushIdle = idle > 0 ? setTimeout(() => mover.stop(Reason.Idle), idle).unref() : undefined
    let ended = false

    function nativeEnd (bytes: number, reason: Reason, error: Error | undefined, residual: Buffer | undefined) {
      try {
        let delivered = prefix.length + bytes
        if (residual && !drain.destroyed) {
          drain.write(residual)
          delivered += residual.length
        }
        // An end we asked for is reported with the reason we were given.
        if (stopped && (reason === Reason.Unsplice || reason === Reason.Close)) ({ reason, error } = stopped)
        finish({ bytes: delivered, reason, error })
      } catch (err) {
        // From an 'end' listener: thrown back into the addon, Node would
        // drop it with a warning. Make it an uncaught exception instead.
        process.nextTick(() => { throw err })
      }
    }

    // The addon knows two ways to be stopped: after the bytes in flight
    // (unsplice) or at once (everything else).
    function stopNative (h: NativeHandle, reason: Reason) {
      native.stop(h, reason === Reason.Unsplice ? Reason.Unsplice : Reason.Close)
    }

    function finish (end: MoverEnd) {
      ended = true
      stopTimeouts()
      hold.release()
      onEnd(end)
    }

    function flushed () {
      flushing = false
      clearTimeout(flushIdle)
    }

    writeFlushed(drain, prefix).then(error => {
      if (!flushing) return
      flushed()
      if (error) stopped = { reason: Reason.Error, error }
      if (!handle) return finish({ bytes: prefix.length, reason: stopped?.reason ?? Reason.Max, error: stopped?.error })
      if (stopped) stopNative(handle, stopped.reason)
      else native.run(handle)
    })

    const mover: Mover = {
      get bytes () { return prefix.length + (handle ? native.bytes(handle) : 0) },
      stop (reason, error) {
        // A close or an error overrides an unsplice still under way.
        if (ended || (stopped && (stopped.reason !== Reason.Unsplice || reason === Reason.Unsplice))) return
        stopped = { reason, error }
        if (!flushing) {
          if (handle) stopNative(handle, reason)
          return
        }
        flushed()
        // The kernel never ran: its end comes at once, with no bytes.
        if (handle) native.stop(handle, Reason.Close)
        else finish({ bytes: prefix.length, reason, error })
      },
      ref (on) {
        if (handle && !ended) native.ref(handle, on)
      }
    }
    const stopTimeouts = keepTimeoutsAlive([source, drain], () => mover.bytes)
    return mover
  }
}
