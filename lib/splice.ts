import { EventEmitter, once } from 'node:events'
import type net from 'node:net'
import { type BackendName, pickBackend } from './backends.js'
import { invalidArgType, systemError } from './errors.js'
import type { Mover, MoverEnd, StartMover } from './mover.js'
import { Reason } from './native.js'
import { checkCount, checkLimits, checkSocket, type Limits } from './options.js'
import { stagedMover } from './staged-mover.js'
import { userspaceMover } from './userspace-mover.js'

export interface SpliceOptions extends Limits {
  /** End the drain after the source's EOF, once every byte is in it. Default true. */
  end?: boolean
  /** 'auto' (default), 'so_splice', 'pipe' or 'userspace'. */
  backend?: BackendName | 'auto'
  /**
   * Bytes to move in JavaScript before a kernel backend takes over; a
   * connection that ends sooner never costs a kernel splice. Default 0.
   */
  spliceAfter?: number
}

export type EndReason = 'eof' | 'max' | 'idle' | 'unsplice' | 'error' | 'close'

export interface SpliceResult {
  /** Bytes that left the source and reached (or were queued on) the drain. */
  bytes: number
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

// One source per drain and one drain per source, as the kernels enforce.
const sources = new WeakSet<net.Socket>()
const drains = new WeakSet<net.Socket>()

export interface Splice {
  on (event: 'end', listener: (result: SpliceResult) => void): this
  once (event: 'end', listener: (result: SpliceResult) => void): this
}

/** One direction of bytes from a source socket to a drain socket. */
export class Splice extends EventEmitter {
  readonly backend: BackendName
  /** Resolves (never rejects) with how the splice ended. */
  readonly done: Promise<SpliceResult>
  #source: net.Socket
  #drain: net.Socket
  #end: boolean
  #mover?: Mover
  #result?: SpliceResult
  #resolve!: (result: SpliceResult) => void
  #refed = true
  #onClose = () => this.#stop(Reason.Close)
  #onError = (error: Error) => this.#stop(Reason.Error, error)

  /** @internal use splice() */
  constructor (source: net.Socket, drain: net.Socket, options: SpliceOptions = {}) {
    super()
    checkSocket('source', source)
    checkSocket('drain', drain)
    if (source === drain) throw systemError('EINVAL', 'splice', 'source and drain are the same socket')
    if (drain.writableEnded) throw systemError('EPIPE', 'splice', 'the drain has been ended: nothing more can be written to it')
    const { max, idle } = checkLimits(options)
    const { end = true } = options
    if (typeof end !== 'boolean') throw invalidArgType('options.end', 'of type boolean', end)
    const backend = pickBackend(options.backend)
    const spliceAfter = checkCount('spliceAfter', options.spliceAfter)
    const start = spliceAfter > 0 && backend.check
      ? stagedMover(userspaceMover, backend.start, spliceAfter, backend.check)
      : backend.start
    if (sources.has(source)) throw systemError('EBUSY', 'splice', 'the source is already spliced')
    if (drains.has(drain)) throw systemError('EBUSY', 'splice', 'the drain is already spliced to')

    this.backend = backend.name
    this.#source = source
    this.#drain = drain
    this.#end = end
    this.done = new Promise(resolve => { this.#resolve = resolve })
    // The kernel cannot honour a cork, so no backend does: bytes go out as they come.
    while (drain.writableCorked > 0) drain.uncork()
    const begin = () => this.#begin(start, max, idle)
    if (source.connecting || drain.connecting) {
      this.#claim()
      Promise.all([connected(source), connected(drain)]).then(() => {
        if (this.#result) return
        // Destroyed while the other was connecting, before its 'close' came.
        if (source.destroyed || drain.destroyed) return this.#finish({ bytes: 0, reason: Reason.Close })
        try {
          begin()
        } catch (error) {
          this.#finish({ bytes: 0, reason: Reason.Error, error: error as Error })
        }
      }, () => { /* the socket's 'error' or 'close' ends the splice */ })
    } else {
      begin()
      this.#claim()
    }
  }

  /** Bytes moved so far (the final count once ended). */
  get bytes (): number {
    return this.#result?.bytes ?? this.#mover?.bytes ?? 0
  }

  /**
   * Ends the splice; bytes in flight go to the drain first (those the drain
   * does not take at once are queued on it in Node, and counted).
   */
  unsplice (): void {
    this.#stop(Reason.Unsplice)
  }

  /** Lets the process exit while this splice is still active. */
  unref (): this {
    this.#refed = false
    this.#mover?.ref(false)
    return this
  }

  ref (): this {
    this.#refed = true
    this.#mover?.ref(true)
    return this
  }

  #begin (start: StartMover, max: number, idle: number) {
    this.#mover = start(this.#source, this.#drain, max, idle, end => this.#finish(end))
    if (!this.#refed) this.#mover.ref(false)
  }

  #claim () {
    sources.add(this.#source)
    drains.add(this.#drain)
    for (const socket of [this.#source, this.#drain]) {
      socket.on('close', this.#onClose)
      socket.on('error', this.#onError)
    }
  }

  #stop (reason: Reason, error?: Error) {
    if (this.#result) return
    if (this.#mover) this.#mover.stop(reason, error)
    else this.#finish({ bytes: 0, reason, error })
  }

  #finish ({ bytes, reason, error }: MoverEnd) {
    if (this.#result) return
    const source = this.#source
    const drain = this.#drain
    sources.delete(source)
    drains.delete(drain)
    for (const socket of [source, drain]) {
      socket.off('close', this.#onClose)
      socket.off('error', this.#onError)
    }
    if (reason === Reason.Eof && this.#end && !drain.destroyed) drain.end()
    const result: SpliceResult = { bytes, reason: reasonNames[reason] }
    if (error) result.error = error
    this.#result = result
    // done settles even if an 'end' listener throws.
    this.#resolve(result)
    this.emit('end', result)
  }
}

function connected (socket: net.Socket): Promise<unknown> {
  return socket.connecting ? once(socket, 'connect') : Promise.resolve()
}

/** Splices `source` into `drain` (one way) and returns the running splice. */
export function splice (source: net.Socket, drain: net.Socket, options?: SpliceOptions): Splice {
  return new Splice(source, drain, options)
}
