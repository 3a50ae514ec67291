import dgram from 'node:dgram'
import util from 'node:util'
import { checkFree, Claim, overrides } from './claim.js'
import { invalidArgValue, systemError } from './errors.js'
import { Flag, type NativeHandle, Reason } from './native.js'
import type { RelayOptions } from './options.js'
import type { FlowEnd } from './relay.js'

// UDP relays, with OpenBSD's semantics: datagrams whole and in order, `max`
// never splits one (the one that would pass it stays for JavaScript), no
// EOF, an ICMP error on a connected socket ends the relay with it. The
// native engine moves batches in its worker threads; the userspace mover
// relays 'message' events with send().

interface UdpHandle {
  fd: number
  recvStart (): number
  recvStop (): number
}

// Node keeps a dgram socket's handle in a symbol-keyed state (`_handle` is
// a deprecated getter for it).
let stateKey: symbol | undefined

export function handleOf (socket: dgram.Socket): UdpHandle | null {
  stateKey ??= Object.getOwnPropertySymbols(socket).find(k => k.description === 'state symbol')
  const state = stateKey && (socket as unknown as Record<symbol, { handle: UdpHandle | null } | undefined>)[stateKey]
  if (!state) throw new Error('sosplice: this Node keeps its UDP handle where sosplice does not know to look')
  return state.handle
}

/** Starts or stops Node receiving on a UDP handle. */
export function receiving (handle: UdpHandle, on: boolean): void {
  const status = on ? handle.recvStart() : handle.recvStop()
  if (status < 0) throw systemError(util.getSystemErrorName(status), on ? 'uv_udp_recv_start' : 'uv_udp_recv_stop')
}

export function isDatagram (socket: unknown): socket is dgram.Socket {
  return socket instanceof dgram.Socket
}

/**
 * Checks that UDP sockets can be relayed: both UDP, open, bound, and each
 * drain connected (its one peer gets every datagram).
 */
export function checkDatagramPair (source: unknown, drain: unknown, both: boolean): asserts source is dgram.Socket {
  if (!isDatagram(source) || !isDatagram(drain)) {
    throw systemError('EPROTONOSUPPORT', 'splice', 'a UDP socket is spliced only with another UDP socket')
  }
  if (source === drain) throw systemError('EINVAL', 'splice', 'source and drain are the same socket')
  for (const [name, socket] of [['source', source], ['drain', drain]] as const) {
    if (!handleOf(socket)) throw systemError('EBADF', 'splice', `${name} is closed`)
    try {
      socket.address()
    } catch {
      throw systemError('EINVAL', 'splice', `${name} is not bound yet: wait for its 'listening' event`)
    }
  }
  for (const [name, socket] of both ? [['source', source], ['drain', drain]] as const : [['drain', drain]] as const) {
    try {
      socket.remoteAddress()
    } catch {
      throw systemError('ENOTCONN', 'splice', `${name} is not connected: a UDP drain sends every datagram to its one peer`)
    }
  }
}

/** A UDP relay has no JavaScript phase to splice after. */
export function checkNoSpliceAfter (spliceAfter: number | undefined): void {
  if (spliceAfter !== undefined) {
    throw invalidArgValue('options.spliceAfter', 'applies to TCP only: a UDP relay has no JavaScript phase', spliceAfter)
  }
}

/** One direction: `source` into `drain`. */
export class DatagramFlow {
  copy?: DatagramCopy
  end?: FlowEnd

  constructor (readonly index: 0 | 1, readonly source: dgram.Socket, readonly drain: dgram.Socket) {}
}

export class DatagramRelay {
  readonly flows: DatagramFlow[]
  readonly #sockets: [dgram.Socket, dgram.Socket]
  readonly #options: RelayOptions
  #handle?: NativeHandle
  #held: dgram.Socket[] = []
  #stopped?: { reason: Reason, error?: Error }
  #ended = false
  readonly #onFlowEnd: (flow: DatagramFlow) => void
  readonly #onDone: (flows: DatagramFlow[]) => void
  #claim?: Claim

  /** Checked sockets (checkDatagramPair) and options (checkNoSpliceAfter). */
  constructor (a: dgram.Socket, b: dgram.Socket, both: boolean, options: RelayOptions,
    onFlowEnd: (flow: DatagramFlow) => void, onDone: (flows: DatagramFlow[]) => void) {
    this.#sockets = [a, b]
    this.#options = options
    this.#onFlowEnd = onFlowEnd
    this.#onDone = onDone
    this.flows = [new DatagramFlow(0, a, b)]
    if (both) this.flows.push(new DatagramFlow(1, b, a))
    checkFree(this.flows)
    if (options.signal?.aborted) {
      // Aborted before it began: nothing moves.
      this.#take()
      for (const f of this.flows) this.#finish(f, { bytes: 0, datagrams: 0, reason: Reason.Unsplice })
      return
    }
    if (options.backend.native) this.#start()
    this.#take()
    if (!options.backend.native) this.#copy()
  }

  /** Bytes flow `index` has moved so far (the final count once ended). */
  bytes (index: 0 | 1): number {
    const flow = this.flows[index]
    if (flow.end) return flow.end.bytes
    if (flow.copy) return flow.copy.bytes
    return this.#handle ? this.#options.backend.native!.bytes(this.#handle, flow.index) : 0
  }

  /** Ends every flow still going; an unsplice lets datagrams held for the drain go first. */
  stop (reason: Reason, error?: Error): void {
    if (this.#ended || !overrides(this.#stopped, reason)) return
    this.#stopped = { reason, error }
    if (this.#handle) {
      this.#options.backend.native!.stop(this.#handle, reason === Reason.Unsplice ? Reason.Unsplice : Reason.Close)
    } else {
      for (const f of this.flows) this.#finish(f, { bytes: this.bytes(f.index), datagrams: f.copy?.datagrams ?? 0, reason, error })
    }
  }

  ref (on: boolean): void {
    if (this.#handle && !this.#ended) this.#options.backend.native!.ref(this.#handle, on)
  }

  /**
   * Node stops receiving on the sources while the engine reads them: a
   * bound Node socket is always receiving, so it starts again as its flow ends.
   * Datagrams Node had received were emitted already.
   */
  #start () {
    const native = this.#options.backend.native!
    const { max, idle } = this.#options
    let flags = Flag.Checked | Flag.Datagram | Flag.Run
    for (const f of this.flows) flags |= Flag.Flow0 << f.index
    for (const f of this.flows) {
      // Sends Node still has queued would be overtaken by the engine's.
      if (f.drain.getSendQueueCount() > 0) {
        throw systemError('EBUSY', 'splice', 'the drain has sends still queued in Node: splice once their callbacks have run')
      }
    }
    try {
      for (const f of this.flows) this.#recv(f.source, false)
      this.#handle = native.start(handleOf(this.#sockets[0])!.fd, handleOf(this.#sockets[1])!.fd, max, max, idle,
        flags, this.#nativeEnd)
    } catch (error) {
      this.#release()
      throw error
    }
  }

  #recv (socket: dgram.Socket, on: boolean) {
    const handle = handleOf(socket)
    if (!handle) return
    receiving(handle, on)
    if (on) this.#held = this.#held.filter(s => s !== socket)
    else this.#held.push(socket)
  }

  #release () {
    for (const socket of [...this.#held]) this.#recv(socket, true)
  }

  #copy () {
    const { max, idle } = this.#options
    for (const f of this.flows) {
      f.copy = new DatagramCopy(f.source, f.drain, max, idle,
        (reason, error) => this.#finish(f, { bytes: f.copy!.bytes, datagrams: f.copy!.datagrams, reason, error }))
    }
  }

  #nativeEnd = (index: 0 | 1, bytes: number, reason: Reason, error: Error | undefined,
    _residual: Buffer | undefined, datagrams: number) => {
    try {
      const stopped = this.#stopped
      if (stopped && (reason === Reason.Unsplice || reason === Reason.Close)) ({ reason, error } = stopped)
      // OpenBSD's kernel counts bytes only (-1): the result has no datagrams.
      this.#finish(this.flows[index], { bytes, datagrams: datagrams < 0 ? undefined : datagrams, reason, error })
    } catch (err) {
      process.nextTick(() => { throw err })
    }
  }

  #finish (f: DatagramFlow, end: FlowEnd) {
    if (f.end) return
    f.end = end
    f.copy?.detach()
    this.#claim?.free(f)
    // Its source is an ordinary socket again, whatever the other flow does.
    if (this.#held.includes(f.source)) this.#recv(f.source, true)
    const done = this.flows.every(g => g.end)
    if (done) {
      this.#ended = true
      this.#claim?.end()
    }
    this.#onFlowEnd(f)
    if (done) this.#onDone(this.flows)
  }

  #take () {
    this.#claim = new Claim(this.flows, this.#sockets, this.#options.signal, (reason, error) => this.stop(reason, error))
  }
}

/**
 * The userspace mover: 'message' into send(). The source's own 'message'
 * listeners are set aside while it runs, as the engine keeps datagrams from
 * Node; the datagram that would pass `limit` is given back to them after.
 */
class DatagramCopy {
  bytes = 0
  datagrams = 0
  readonly #source: dgram.Socket
  readonly #drain: dgram.Socket
  readonly #limit: number
  readonly #onEnd: (reason: Reason, error?: Error) => void
  readonly #theirs: ((...args: unknown[]) => void)[]
  #timer?: NodeJS.Timeout
  #over?: [Buffer, dgram.RemoteInfo]
  #detached = false

  constructor (source: dgram.Socket, drain: dgram.Socket, limit: number, idle: number,
    onEnd: (reason: Reason, error?: Error) => void) {
    this.#source = source
    this.#drain = drain
    this.#limit = limit
    this.#onEnd = onEnd
    this.#theirs = source.rawListeners('message') as ((...args: unknown[]) => void)[]
    source.removeAllListeners('message')
    source.on('message', this.#onMessage)
    if (idle > 0) this.#timer = setTimeout(() => this.#end(Reason.Idle), idle).unref()
  }

  detach (): void {
    if (this.#detached) return
    this.#detached = true
    clearTimeout(this.#timer)
    this.#source.off('message', this.#onMessage)
    for (const listener of this.#theirs) this.#source.on('message', listener)
    const over = this.#over
    // After the relay's end is known, as the kernel's datagram would come.
    if (over) setImmediate(() => this.#source.emit('message', ...over))
  }

  #onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    if (this.#limit > 0 && this.bytes + msg.length > this.#limit) {
      this.#over = [msg, rinfo]
      return this.#end(Reason.Max)
    }
    this.bytes += msg.length
    this.datagrams++
    this.#timer?.refresh()
    try {
      this.#drain.send(msg, err => {
        if (!err || this.#detached) return
        // Not sent (EMSGSIZE, ECONNREFUSED...): not moved.
        this.bytes -= msg.length
        this.datagrams--
        this.#end(Reason.Error, err)
      })
    } catch (err) {
      this.#end(Reason.Error, err as Error)
    }
    if (this.#limit > 0 && this.bytes === this.#limit) this.#end(Reason.Max)
  }

  #end (reason: Reason, error?: Error) {
    if (this.#detached) return
    this.detach()
    this.#onEnd(reason, error)
  }
}
