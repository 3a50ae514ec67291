import type net from 'node:net'
import type { Reason } from './native.js'

// What a backend gives the Splice class: something that moves bytes one way
// between two sockets and reports, once, how it ended.

export interface MoverEnd {
  /** Bytes that left the source and were delivered, or queued, to the drain. */
  bytes: number
  reason: Reason
  error?: Error
}

export interface Mover {
  /** Bytes moved so far. */
  readonly bytes: number
  /** Ends the move: Unsplice after what is in flight, others at once. */
  stop (reason: Reason, error?: Error): void
  /** Whether the move keeps the event loop alive. */
  ref (on: boolean): void
}

export type StartMover = (source: net.Socket, drain: net.Socket, max: number, idle: number,
  onEnd: (end: MoverEnd) => void) => Mover
