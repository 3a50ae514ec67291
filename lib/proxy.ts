import type net from 'node:net'
import { splice, type SpliceOptions, type SpliceResult } from './splice.js'

export interface ProxyResult {
  aToB: SpliceResult
  bToA: SpliceResult
}

/**
 * Splices `a` and `b` both ways and resolves once both directions have
 * ended. An EOF from one peer becomes a write shutdown towards the other
 * while the other direction keeps flowing: for that the sockets are made
 * half-open (`allowHalfOpen`) while the proxy runs.
 */
export function proxy (a: net.Socket, b: net.Socket, options?: SpliceOptions): Promise<ProxyResult> {
  const aToB = splice(a, b, options)
  let bToA
  try {
    bToA = splice(b, a, options)
  } catch (err) {
    aToB.unsplice()
    throw err
  }
  const halfOpen = [a.allowHalfOpen, b.allowHalfOpen]
  a.allowHalfOpen = b.allowHalfOpen = true
  return Promise.all([aToB.done, bToA.done]).then(([ab, ba]) => {
    [a.allowHalfOpen, b.allowHalfOpen] = halfOpen
    return { aToB: ab, bToA: ba }
  })
}
