import type { EventEmitter } from 'node:events'
import { systemError } from './errors.js'
import { Reason } from './native.js'

// The sockets a relay holds, TCP or UDP: one relay per source and one per
// drain, as the kernels enforce, and the events that stop it. Sets, not
// WeakSets: a relay ends when its sockets close, and weak collections cost
// the garbage collector on every connection.
const sources = new Set<EventEmitter>()
const drains = new Set<EventEmitter>()

interface Ends { source: EventEmitter, drain: EventEmitter }

/**
 * Whether a stop for `reason` still changes a relay already stopped for
 * `stopped`: a close or an error overrides an unsplice under way, and
 * nothing else overrides.
 */
export function overrides (stopped: { reason: Reason } | undefined, reason: Reason): boolean {
  return !stopped || (stopped.reason === Reason.Unsplice && reason !== Reason.Unsplice)
}

/** Throws EBUSY when a flow's source or drain is already in a relay. */
export function checkFree (flows: Ends[]): void {
  for (const f of flows) {
    if (sources.has(f.source)) throw systemError('EBUSY', 'splice', 'the source is already spliced')
    if (drains.has(f.drain)) throw systemError('EBUSY', 'splice', 'the drain is already spliced to')
  }
}

/** Claims the flows' sockets; their 'close' and 'error', and the signal's abort, stop the relay. */
export class Claim {
  readonly #sockets: EventEmitter[]
  readonly #signal?: AbortSignal
  readonly #onClose = () => this.stop(Reason.Close)
  readonly #onError = (error: Error) => this.stop(Reason.Error, error)
  readonly #onAbort = () => this.stop(Reason.Unsplice)

  constructor (flows: Ends[], sockets: EventEmitter[], signal: AbortSignal | undefined,
    readonly stop: (reason: Reason, error?: Error) => void) {
    for (const f of flows) {
      sources.add(f.source)
      drains.add(f.drain)
    }
    this.#sockets = sockets
    for (const socket of sockets) socket.on('close', this.#onClose).on('error', this.#onError)
    this.#signal = signal
    signal?.addEventListener('abort', this.#onAbort, { once: true })
  }

  /** A flow has ended: its source and drain are free for another relay. */
  free (flow: Ends): void {
    sources.delete(flow.source)
    drains.delete(flow.drain)
  }

  /** The relay has ended: nothing stops it any more. */
  end (): void {
    for (const socket of this.#sockets) socket.off('close', this.#onClose).off('error', this.#onError)
    this.#signal?.removeEventListener('abort', this.#onAbort)
  }
}
