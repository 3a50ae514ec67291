import type net from 'node:net'
import { systemError } from './errors.js'
import { Reason } from './native.js'

/**
 * Moves one flow through JavaScript with the sockets' own reads and writes,
 * as `pipe()` does: the userspace backend, and the first bytes of a kernel
 * relay. Node's buffered bytes come first as 'data' like any others, and
 * writes queue behind the drain's earlier ones. Ends (once) at EOF, at
 * `limit` bytes (0: none), at an ended drain, or when the relay stops it.
 */
export class Copy {
  bytes = 0
  readonly #source: net.Socket
  readonly #drain: net.Socket
  readonly #limit: number
  readonly #onEnd: (reason: Reason, error?: Error) => void
  /** Called after each chunk: the relay may hand the flow over to the kernel. */
  readonly #onChunk: () => void
  #timer?: NodeJS.Timeout
  #detached = false

  constructor (source: net.Socket, drain: net.Socket, limit: number, idle: number,
    onChunk: () => void, onEnd: (reason: Reason, error?: Error) => void) {
    this.#source = source
    this.#drain = drain
    this.#limit = limit
    this.#onChunk = onChunk
    this.#onEnd = onEnd
    if (idle > 0) this.#timer = setTimeout(() => this.#end(Reason.Idle), idle).unref()
    source.on('data', this.#onData)
    source.on('end', this.#onEof)
    source.resume()
    if (source.readableEnded) process.nextTick(this.#onEof)
  }

  /** Stops copying, leaving the source paused: the relay decides what comes next. */
  detach (): void {
    if (this.#detached) return
    this.#detached = true
    clearTimeout(this.#timer)
    this.#source.off('data', this.#onData)
    this.#source.off('end', this.#onEof)
    this.#drain.off('drain', this.#onDrain)
    this.#source.pause()
  }

  #onData = (chunk: Buffer) => {
    const drain = this.#drain
    if (drain.writableEnded) {
      // Ended from outside: the chunk goes back to the source, uncounted.
      this.#source.pause()
      this.#source.unshift(chunk)
      return this.#end(Reason.Error, systemError('EPIPE', 'write', 'the drain has been ended'))
    }
    const room = this.#limit - this.bytes
    if (this.#limit > 0 && chunk.length >= room) {
      // The bytes past the limit go back to the source for JavaScript to read.
      this.#source.pause()
      if (chunk.length > room) this.#source.unshift(chunk.subarray(room))
      this.#write(chunk.subarray(0, room))
      return this.#end(Reason.Max)
    }
    this.#write(chunk)
    this.#onChunk()
  }

  #write (chunk: Buffer) {
    this.bytes += chunk.length
    this.#timer?.refresh()
    if (!this.#drain.write(chunk)) {
      this.#source.pause()
      this.#drain.once('drain', this.#onDrain)
    }
  }

  #onDrain = () => {
    this.#timer?.refresh()
    this.#source.resume()
  }

  #onEof = () => this.#end(Reason.Eof)

  #end (reason: Reason, error?: Error) {
    if (this.#detached) return
    this.detach()
    this.#onEnd(reason, error)
  }
}
