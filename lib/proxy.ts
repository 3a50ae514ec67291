import type dgram from 'node:dgram'
import type net from 'node:net'
import { checkDatagramPair, checkNoSpliceAfter, DatagramRelay, isDatagram } from './datagram.js'
import { checkPair, relayOptions, type SpliceOptions } from './options.js'
import { type FlowEnd, Relay } from './relay.js'
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
export function proxy (a: net.Socket, b: net.Socket, options?: SpliceOptions): Proxy
/** Two connected UDP sockets: each one's datagrams go to the other's peer. */
export function proxy (a: dgram.Socket, b: dgram.Socket, options?: SpliceOptions): Proxy
export function proxy (a: net.Socket | dgram.Socket, b: net.Socket | dgram.Socket, options?: SpliceOptions): Proxy {
  const parsed = relayOptions(options)
  let resolve!: (result: ProxyResult) => void
  const done = new Promise<ProxyResult>(r => { resolve = r })
  const ended = (flows: { end?: FlowEnd }[]) => {
    resolve({ aToB: spliceResult(flows[0].end!), bToA: spliceResult(flows[1].end!) })
  }
  if (isDatagram(a) || isDatagram(b)) {
    checkDatagramPair(a, b, true)
    checkNoSpliceAfter(options?.spliceAfter)
    const relay = new DatagramRelay(a, b as dgram.Socket, true, parsed, () => {}, ended)
    return withBytes(done, relay)
  }
  checkPair(a, b, parsed.backend, true)
  const halfOpen = [a.allowHalfOpen, b.allowHalfOpen]
  const restore = () => { [a.allowHalfOpen, b.allowHalfOpen] = halfOpen }
  // Before the relay: one whose signal was already aborted ends at once.
  a.allowHalfOpen = b.allowHalfOpen = true
  let relay: Relay
  try {
    relay = new Relay(a, b, true, parsed, () => {}, flows => {
      restore()
      ended(flows)
    })
  } catch (error) {
    restore()
    throw error
  }
  return withBytes(done, relay)
}

// One getter for every proxy, the relay in a symbol-keyed property: proxies
// then share their hidden class. A getter closure per proxy gave each
// promise a shape of its own, which cost about 10 us of CPU a connection.
const relayOf = Symbol('relay')

interface Running { [relayOf]: Relay | DatagramRelay }

function liveBytes (this: Running): Proxy['bytes'] {
  const relay = this[relayOf]
  return { aToB: relay.bytes(0), bToA: relay.bytes(1) }
}

const bytesProperty = { get: liveBytes }

function withBytes (done: Promise<ProxyResult>, relay: Relay | DatagramRelay): Proxy {
  Object.defineProperty(done, relayOf, { value: relay })
  return Object.defineProperty(done, 'bytes', bytesProperty) as Proxy
}
