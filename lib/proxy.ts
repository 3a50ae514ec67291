import type net from 'node:net'
import { checkPair, relayOptions, type SpliceOptions } from './options.js'
import { Relay } from './relay.js'
import { type SpliceResult, spliceResult } from './splice.js'

export interface ProxyResult {
  aToB: SpliceResult
  bToA: SpliceResult
}

/**
 * Moves bytes between `a` and `b` both ways, as one relay, and resolves
 * once both directions have ended. An EOF from one peer becomes a write
 * shutdown towards the other while the other direction keeps flowing: for
 * that the sockets are made half-open (`allowHalfOpen`) while the proxy runs.
 */
export function proxy (a: net.Socket, b: net.Socket, options?: SpliceOptions): Promise<ProxyResult> {
  const parsed = relayOptions(options)
  checkPair(a, b, parsed.backend, true)
  const halfOpen = [a.allowHalfOpen, b.allowHalfOpen]
  let resolve!: (result: ProxyResult) => void
  const done = new Promise<ProxyResult>(r => { resolve = r })
  const relay: Relay = new Relay(a, b, true, parsed, () => {}, () => {
    [a.allowHalfOpen, b.allowHalfOpen] = halfOpen
    const [aToB, bToA] = relay.flows.map(f => spliceResult(f.end!))
    resolve({ aToB, bToA })
  })
  a.allowHalfOpen = b.allowHalfOpen = true
  return done
}
