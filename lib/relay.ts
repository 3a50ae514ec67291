import type net from 'node:net'
import { checkFree, Claim, overrides } from './claim.js'
import { Copy } from './copy.js'
import { endShut, fdOf, type Hold, holdReading, keepTimeoutsAlive, restoreFlowing, takeBuffered, writeFlushed } from './handover.js'
import { Flag, type NativeBinding, type NativeHandle, Reason } from './native.js'
import type { RelayOptions } from './options.js'

// One connection's flows (one for splice(), both directions for proxy()),
// and the one state machine that moves them: connecting, copying in
// JavaScript, handing over to the kernel, kernel, ended. Every way a flow
// can end comes through #finish, once.

export interface FlowEnd {
  /** Bytes that left the source and reached (or were queued on) the drain. */
  bytes: number
  /** Datagrams among them, for a UDP relay. */
  datagrams?: number
  reason: Reason
  error?: Error
}

/** One direction: `source` into `drain`. */
export class Flow {
  /** Bytes delivered, or queued on the drain, before the current phase. */
  base = 0
  copy?: Copy
  hold?: Hold
  /** Whether the kernel moves it (false: `max` was reached by the prefix). */
  kernel = false
  end?: FlowEnd

  constructor (readonly index: 0 | 1, readonly source: net.Socket, readonly drain: net.Socket,
    /** The source's flowing state before the relay: it gets it back. */
    readonly flowing: boolean | null) {}
}

type Phase = 'connecting' | 'copying' | 'handover' | 'kernel' | 'ended'

// Refused for want of resources, or for a socket state JavaScript cannot
// see: the flows go on in JavaScript (Go's `handled == false`).
const fallbackCodes = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'EAGAIN', 'ENOTCONN'])

// A relay copying in JavaScript keeps the process alive while ref'd, as a
// kernel relay does whatever the sockets' own refs: one timer for them all.
let copying = 0
let alive: NodeJS.Timeout | undefined
function countCopying (change: 1 | -1) {
  copying += change
  alive ??= setInterval(() => {}, 2 ** 30)
  if (copying === 0) alive.unref()
  else if (change === 1 && copying === 1) alive.ref()
}

export class Relay {
  readonly flows: Flow[]
  #phase: Phase = 'connecting'
  readonly #sockets: [net.Socket, net.Socket]
  readonly #options: RelayOptions
  readonly #native?: NativeBinding
  #handle?: NativeHandle
  #stopped?: { reason: Reason, error?: Error }
  #refed = true
  #counted = false
  /** The kernel refused for want of resources: JavaScript copies to the end. */
  #refused = false
  #flushIdle?: NodeJS.Timeout
  #stopTimeouts = () => {}
  readonly #onFlowEnd: (flow: Flow) => void
  readonly #onDone: (flows: Flow[]) => void
  #claim?: Claim

  /**
   * Starts moving `a` into `b`, and `b` into `a` when `both`. Throws at once
   * what the kernel refuses when it takes over from the first byte.
   */
  constructor (a: net.Socket, b: net.Socket, both: boolean, options: RelayOptions,
    onFlowEnd: (flow: Flow) => void, onDone: (flows: Flow[]) => void) {
    this.#sockets = [a, b]
    this.#options = options
    this.#native = options.backend.native
    this.#onFlowEnd = onFlowEnd
    this.#onDone = onDone
    this.flows = [new Flow(0, a, b, a.readableFlowing)]
    if (both) this.flows.push(new Flow(1, b, a, b.readableFlowing))
    checkFree(this.flows)
    // The kernel cannot honour a cork, so no backend does: bytes go out as they come.
    for (const f of this.flows) while (f.drain.writableCorked > 0) f.drain.uncork()
    if (options.signal?.aborted) {
      // Aborted before it began: nothing moves.
      this.#take()
      this.#endAll(Reason.Unsplice)
      return
    }
    let connecting = Number(a.connecting) + Number(b.connecting)
    if (connecting === 0) {
      this.#begin()
      this.#take()
      return
    }
    this.#take()
    // Bytes move once both are connected: a listener each, no promise.
    const onConnect = () => {
      if (--connecting > 0 || this.#phase !== 'connecting') return
      // Destroyed while the other was connecting, before its 'close' came.
      if (a.destroyed || b.destroyed) return this.#endAll(Reason.Close)
      try {
        this.#begin()
      } catch (error) {
        this.#endAll(Reason.Error, error as Error)
      }
    }
    for (const socket of this.#sockets) if (socket.connecting) socket.once('connect', onConnect)
  }

  /** Bytes flow `index` has moved so far (the final count once ended). */
  bytes (index: 0 | 1): number {
    const flow = this.flows[index]
    if (flow.end) return flow.end.bytes
    if (flow.copy) return flow.base + flow.copy.bytes
    if (this.#handle && flow.kernel) return flow.base + this.#native!.bytes(this.#handle, flow.index)
    return flow.base
  }

  /**
   * Ends every flow still going. Unsplice lets the bytes in flight reach the
   * drain (those it does not take at once are queued on it in Node, and
   * counted); a close or an error, which overrides an unsplice under way,
   * ends at once.
   */
  stop (reason: Reason, error?: Error): void {
    if (this.#phase === 'ended' || !overrides(this.#stopped, reason)) return
    this.#stopped = { reason, error }
    if (this.#handle) {
      // Before the flush is done the kernel has not run: it ends at once.
      const unsplice = reason === Reason.Unsplice && this.#phase === 'kernel'
      this.#native!.stop(this.#handle, unsplice ? Reason.Unsplice : Reason.Close)
      for (const f of this.flows) if (!f.kernel) this.#finish(f, { bytes: f.base, reason, error })
    } else {
      this.#endAll(reason, error)
    }
  }

  /** Whether the relay keeps the event loop alive. */
  ref (on: boolean): void {
    this.#refed = on
    if (this.#handle && this.#phase !== 'ended') this.#native!.ref(this.#handle, on)
    this.#count()
  }

  #begin () {
    if (this.#native && this.#options.spliceAfter === 0) this.#handOver(true)
    else this.#copy()
  }

  #copy () {
    this.#phase = 'copying'
    this.#count()
    const { max, idle } = this.#options
    for (const f of this.#live()) {
      const copy = new Copy(f.source, f.drain, max > 0 ? max - f.base : 0, idle, () => {
        if (this.#native && !this.#refused && f.base + copy.bytes >= this.#options.spliceAfter) this.#handOver(false)
      }, (reason, error) => this.#finish(f, { bytes: f.base + copy.bytes, reason, error }))
      f.copy = copy
    }
  }

  /**
   * Gives the live flows to the kernel: Node stops reading, and what it
   * had buffered and what is queued on the drains go out first. When
   * nothing is queued on the drains, the kernel starts in the same call,
   * and the pipe engine writes Node's buffered bytes itself, ahead of the
   * source's; otherwise JavaScript writes them and the kernel starts once
   * they are out.
   */
  #handOver (atStart: boolean) {
    const native = this.#native!
    const { max, idle, end } = this.#options
    const live = this.#live()
    this.#phase = 'handover'
    this.#count()
    let flags = Flag.Checked | Flag.Residual
    const limits = [0, 0]
    const heads = [0, 0]
    const engineWritesHeads = native.backend === 'pipe'
    let quiet = true
    for (const f of live) {
      if (f.copy) {
        f.copy.detach()
        f.base += f.copy.bytes
        f.copy = undefined
      }
      f.hold = holdReading(f.source, f.flowing)
      // Node's buffered bytes count against max; if they reach it the
      // kernel never moves this flow.
      const head = heads[f.index] = max > 0 ? Math.min(max - f.base, f.source.readableLength) : f.source.readableLength
      limits[f.index] = max > 0 ? max - f.base - head : 0
      f.kernel = max === 0 || limits[f.index] > 0
      if (f.kernel) flags |= (Flag.Flow0 << f.index) | (end ? Flag.End0 << f.index : 0)
      if (f.drain.writableLength > 0 || (head > 0 && !(engineWritesHeads && f.kernel))) quiet = false
    }
    // Taken from Node for the engine: given back if it refuses.
    const engineHeads: (Buffer | undefined)[] = [undefined, undefined]
    if (quiet) {
      flags |= Flag.Run
      for (const f of live) if (heads[f.index] > 0) engineHeads[f.index] = takeBuffered(f.source, heads[f.index])
    }
    try {
      if (flags & (Flag.Flow0 | Flag.Flow1)) {
        this.#handle = native.start(fdOf(this.#sockets[0]), fdOf(this.#sockets[1]), limits[0], limits[1], idle,
          flags, this.#nativeEnd, engineHeads[0], engineHeads[1])
      }
    } catch (error) {
      for (const f of live) {
        const head = engineHeads[f.index]
        if (head) f.source.unshift(head)
        f.hold!.release(false)
        f.hold = undefined
        f.kernel = false
      }
      if (atStart) throw error
      if (!fallbackCodes.has((error as NodeJS.ErrnoException).code!)) return this.#endAll(Reason.Error, error as Error)
      this.#refused = true
      return this.#copy()
    }
    if (this.#handle && !this.#refed) native.ref(this.#handle, false)
    this.#stopTimeouts = keepTimeoutsAlive(this.#sockets, () => this.flows.reduce((n, f) => n + this.bytes(f.index), 0))
    if (quiet) {
      this.#phase = 'kernel'
      return
    }
    const prefixes = live.map(f => takeBuffered(f.source, heads[f.index]))
    live.forEach((f, i) => { f.base += prefixes[i].length })
    // Until Node's bytes are out the kernel has not started: a drain that
    // does not take them within `idle` ms ends the relay, and they stay
    // queued on it, counted.
    if (idle > 0) this.#flushIdle = setTimeout(() => this.stop(Reason.Idle), idle).unref()
    Promise.all(live.map((f, i) => writeFlushed(f.drain, prefixes[i]))).then(errors => {
      if (this.#phase !== 'handover' || this.#stopped) return
      clearTimeout(this.#flushIdle)
      const error = errors.find(e => e !== undefined)
      if (error) return this.stop(Reason.Error, error)
      this.#phase = 'kernel'
      for (const f of live) if (!f.kernel) this.#finish(f, { bytes: f.base, reason: Reason.Max })
      if (this.#handle) native.run(this.#handle)
    })
  }

  #nativeEnd = (index: 0 | 1, bytes: number, reason: Reason, error: Error | undefined, residual: Buffer | undefined) => {
    try {
      const f = this.flows[index]
      let delivered = f.base + bytes
      if (residual && !f.drain.destroyed) {
        f.drain.write(residual)
        delivered += residual.length
      }
      // An end we asked for is reported with the reason we were given.
      const stopped = this.#stopped
      if (stopped && (reason === Reason.Unsplice || reason === Reason.Close)) ({ reason, error } = stopped)
      this.#finish(f, { bytes: delivered, reason, error })
    } catch (err) {
      // From an 'end' listener: thrown back into the addon, Node would drop
      // it with a warning. Make it an uncaught exception instead.
      process.nextTick(() => { throw err })
    }
  }

  #live (): Flow[] {
    return this.flows.filter(f => !f.end)
  }

  #endAll (reason: Reason, error?: Error) {
    for (const f of this.#live()) this.#finish(f, { bytes: this.bytes(f.index), reason, error })
  }

  #finish (f: Flow, end: FlowEnd) {
    if (f.end) return
    f.end = end
    if (f.copy) {
      f.copy.detach()
      f.copy = undefined
    }
    if (f.hold) {
      f.hold.release(end.reason === Reason.Eof)
      f.hold = undefined
    } else if (!f.source.destroyed) {
      restoreFlowing(f.source, f.flowing)
    }
    this.#claim?.free(f)
    if (end.reason === Reason.Eof && this.#options.end && !f.drain.destroyed) {
      // An EOF the kernel moved: the engine has shut the drain already.
      if (f.kernel) endShut(f.drain)
      else f.drain.end()
    }
    const done = this.flows.every(g => g.end)
    if (done) {
      this.#phase = 'ended'
      clearTimeout(this.#flushIdle)
      this.#stopTimeouts()
      this.#count()
      this.#claim?.end()
    }
    this.#onFlowEnd(f)
    if (done) this.#onDone(this.flows)
  }

  #take () {
    this.#claim = new Claim(this.flows, this.#sockets, this.#options.signal, (reason, error) => this.stop(reason, error))
  }

  #count () {
    const on = this.#phase === 'copying' && this.#refed
    if (on === this.#counted) return
    this.#counted = on
    countCopying(on ? 1 : -1)
  }
}
