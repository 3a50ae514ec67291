import type dgram from 'node:dgram'
import { EventEmitter } from 'node:events'
import type net from 'node:net'
import type { BackendName } from './backends.js'
import { checkDatagramPair, checkNoSpliceAfter, type DatagramFlow, DatagramRelay, isDatagram } from './datagram.js'
import { Reason } from './native.js'
import { checkPair, relayOptions, type SpliceOptions } from './options.js'
import { type Flow, type FlowEnd, Relay } from './relay.js'

export type { SpliceOptions }

export type EndReason = 'eof' | 'max' | 'idle' | 'unsplice' | 'error' | 'close'

export interface SpliceResult {
  /** Bytes that left the source and reached (or were queued on) the drain. */
  bytes: number
  /** UDP: the datagrams those bytes came in. */
  datagrams?: number
  reason: EndReason
  error?: Error
}

export const reasonNames: Record<Reason, EndReason> = {
  [Reason.Eof]: 'eof',
  [Reason.Max]: 'max',
  [Reason.Idle]: 'idle',
  [Reason.Unsplice]: 'unsplice',
  [Reason.Error]: 'error',
  [Reason.Close]: 'close'
}

/** A flow's end as the API gives it. */
export function spliceResult ({ bytes, datagrams, reason, error }: FlowEnd): SpliceResult {
  const result: SpliceResult = { bytes, reason: reasonNames[reason] }
  if (datagrams !== undefined) result.datagrams = datagrams
  if (error) result.error = error
  return result
}

export interface Splice {
  on (event: 'end', listener: (result: SpliceResult) => void): this
  once (event: 'end', listener: (result: SpliceResult) => void): this
}

/**
 * One direction of bytes from a source socket to a drain socket: TCP or
 * Unix stream sockets, or UDP sockets (datagrams whole).
 */
export class Splice extends EventEmitter {
  readonly backend: BackendName
  /** Resolves (never rejects) with how the splice ended. */
  readonly done: Promise<SpliceResult>
  readonly #relay: Relay | DatagramRelay
  #resolve!: (result: SpliceResult) => void

  /** @internal use splice() */
  constructor (source: net.Socket | dgram.Socket, drain: net.Socket | dgram.Socket, options?: SpliceOptions) {
    super()
    const parsed = relayOptions(options)
    this.done = new Promise(resolve => { this.#resolve = resolve })
    if (isDatagram(source) || isDatagram(drain)) {
      checkDatagramPair(source, drain, false)
      checkNoSpliceAfter(options?.spliceAfter)
      this.backend = parsed.backend.name
      this.#relay = new DatagramRelay(source, drain as dgram.Socket, false, parsed, flow => this.#end(flow), () => {})
      return
    }
    checkPair(source, drain, parsed.backend)
    this.backend = parsed.backend.name
    this.#relay = new Relay(source, drain, false, parsed, flow => this.#end(flow), () => {})
  }

  /** Bytes moved so far (the final count once ended). */
  get bytes (): number {
    return this.#relay.bytes(0)
  }

  /**
   * Ends the splice; bytes in flight go to the drain first (those the drain
   * does not take at once are queued on it in Node, and counted). Resolves
   * as `done` does: with 'unsplice', or the end that came first.
   */
  unsplice (): Promise<SpliceResult> {
    this.#relay.stop(Reason.Unsplice)
    return this.done
  }

  /** Lets the process exit while this splice is still active. */
  unref (): this {
    this.#relay.ref(false)
    return this
  }

  ref (): this {
    this.#relay.ref(true)
    return this
  }

  #end (flow: Flow | DatagramFlow) {
    const result = spliceResult(flow.end!)
    // done settles even if an 'end' listener throws.
    this.#resolve(result)
    this.emit('end', result)
  }
}

/**
 * Splices `source` into `drain` (one way) and returns the running splice.
 * Two UDP sockets: the source bound, the drain connected.
 */
export function splice (source: net.Socket, drain: net.Socket, options?: SpliceOptions): Splice
export function splice (source: dgram.Socket, drain: dgram.Socket, options?: SpliceOptions): Splice
export function splice (source: net.Socket | dgram.Socket, drain: net.Socket | dgram.Socket, options?: SpliceOptions): Splice {
  return new Splice(source, drain, options)
}
