import type net from 'node:net'
import { checkPair, relayOptions, type SpliceOptions } from './options.js'
import { Relay } from './relay.js'
import { type SpliceResult, spliceResult } from './splice.js'

export interface ProxyResult {
  aToB: SpliceResult
  bToA: SpliceResult
}

/** The running proxy: a promise of its result, with live counts. */
export interface Proxy extends Promise<ProxyResult> {
  /** Bytes moved so far each way (the final counts once ended). */
  readonly bytes: { readonly aToB: number, readonly bToA: number }
}

/**
 * Moves bytes between `a` and `b` both ways, as one relay, and resolves
 * once both directions have ended. An EOF from one peer becomes a write
 * shutdown towards the other while the other direction keeps flowing: for
 * that the sockets are made half-open (`allowHalfOpen`) while the proxy runs.
 */
export function proxy (a: net.Socket, b: net.Socket, options?: SpliceOptions): Proxy {
  const parsed = relayOptions(options)
  checkPair(a, b, parsed.backend, true)
  const halfOpen = [a.allowHalfOpen, b.allowHalfOpen]
  let resolve!: (result: ProxyResult) => void
  const done = new Promise<ProxyResult>(r => { resolve = r })
  const restore = () => { [a.allowHalfOpen, b.allowHalfOpen] = halfOpen }
  // Before the relay: one whose signal was already aborted ends at once.
  a.allowHalfOpen = b.allowHalfOpen = true
  let relay: Relay
  try {
    relay = new Relay(a, b, true, parsed, () => {}, flows => {
      restore()
      const [aToB, bToA] = flows.map(f => spliceResult(f.end!))
      resolve({ aToB, bToA })
    })
  } catch (error) {
    restore()
    throw error
  }
  return Object.defineProperty(done, 'bytes', {
    get: () => ({ aToB: relay.bytes(relay.flows[0]), bToA: relay.bytes(relay.flows[1]) })
  }) as Proxy
}
