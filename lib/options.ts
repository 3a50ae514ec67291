import net from 'node:net'
import tls from 'node:tls'
import { type Backend, type BackendName, pickBackend } from './backends.js'
import { invalidArgType, outOfRange, systemError } from './errors.js'
import { fdOf, handleKind } from './handover.js'

export interface Limits {
  /** Bytes; unsplice after exactly this many. 0 or absent: no limit. */
  max?: number
  /** Milliseconds without a byte moved before unsplicing, at most `maxIdle`. 0 or absent: none. */
  idle?: number
}

export interface SpliceOptions extends Limits {
  /** End the drain after the source's EOF, once every byte is in it. Default true. */
  end?: boolean
  /** 'auto' (default), 'so_splice', 'pipe' or 'userspace'. */
  backend?: BackendName | 'auto'
  /**
   * Bytes each direction moves in JavaScript before a kernel backend takes
   * over; a connection that ends sooner never costs a kernel splice. 0:
   * the kernel from the first byte. Default: `autoSpliceAfter` with
   * backend 'auto', 0 with a kernel backend named.
   */
  spliceAfter?: number
  /** Aborting it ends the splice (or both directions of a proxy) as unsplice() does. */
  signal?: AbortSignal
}

/**
 * What 'auto' copies in JavaScript before the kernel takes over: exchanges
 * of a few KiB cost no more copied than spliced, and from about 8 KiB the
 * kernel wins on a host whose cores serve the proxy (measured with
 * `sosplice bench --message`, README).
 */
export const autoSpliceAfter = 16 * 1024

/** Options parsed and checked, once per relay. */
export interface RelayOptions {
  readonly backend: Backend
  readonly max: number
  readonly idle: number
  readonly end: boolean
  readonly spliceAfter: number
  readonly signal?: AbortSignal
}

let defaults: RelayOptions | undefined

export function relayOptions (options: SpliceOptions | undefined): RelayOptions {
  // Most relays take the defaults: parsed once.
  if (options === undefined) return (defaults ??= parse(undefined))
  return parse(options)
}

function parse (options: SpliceOptions | undefined): RelayOptions {
  const { max, idle } = checkLimits(options)
  const { end = true, backend: name, spliceAfter, signal } = options ?? {}
  if (typeof end !== 'boolean') throw invalidArgType('options.end', 'of type boolean', end)
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalidArgType('options.signal', 'an instance of AbortSignal', signal)
  }
  const backend = pickBackend(name)
  return {
    backend,
    max,
    idle,
    end,
    signal,
    spliceAfter: spliceAfter === undefined && backend.auto && backend.native
      ? autoSpliceAfter
      : checkCount('spliceAfter', spliceAfter)
  }
}

/**
 * Sockets that `backend` can move bytes between, now or once connected:
 * one way, or both ways (`both`: the source is a drain too).
 */
export function checkPair (source: net.Socket, drain: net.Socket, backend: Backend, both = false): void {
  checkSocket('source', source)
  checkSocket('drain', drain)
  if (source === drain) throw systemError('EINVAL', 'splice', 'source and drain are the same socket')
  for (const d of both ? [drain, source] : [drain]) {
    if (d.writableEnded) throw systemError('EPIPE', 'splice', 'the drain has been ended: nothing more can be written to it')
  }
  if (!backend.native) return
  // Node's Unix socket handle can also carry a pipe or a FIFO, which no
  // kernel splices: identity() says ENOTSOCK.
  for (const s of [source, drain]) if (handleKind(s) === 'Pipe' && !s.connecting) backend.native.identity(fdOf(s))
  // A TCP socket and a Unix one are never spliced together.
  if (handleKind(source) !== handleKind(drain)) {
    throw systemError('EPROTONOSUPPORT', 'splice', `a ${handleKind(source)} source and a ${handleKind(drain)} drain`)
  }
}

/** The longest `idle`: Node's timers hold no more (about 24.8 days). */
export const maxIdle = 2 ** 31 - 1

/** Descriptors are C ints: anything larger names no descriptor. */
const maxFd = 2 ** 31 - 1

export function checkLimits (options: unknown): Required<Limits> {
  if (options === undefined) return { max: 0, idle: 0 }
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options)
  const { max, idle } = options as Limits
  return { max: checkCount('max', max), idle: checkCount('idle', idle, maxIdle) }
}

/** A whole number of bytes or milliseconds up to `limit`; absent is 0. */
export function checkCount (name: string, value: unknown, limit = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return 0
  if (typeof value !== 'number') throw invalidArgType(`options.${name}`, 'of type number', value)
  if (!Number.isSafeInteger(value) || value < 0 || value > limit) {
    throw outOfRange(`options.${name}`, `an integer >= 0 and <= ${limit}`, value)
  }
  return value
}

export function checkFd (name: string, fd: unknown): number {
  if (typeof fd !== 'number') throw invalidArgType(name, 'of type number', fd)
  if (!Number.isInteger(fd)) throw outOfRange(name, 'an integer', fd)
  if (fd < 0 || fd > maxFd) throw systemError('EBADF', 'splice', `${name} is ${fd}`)
  return fd
}

/** A Node TCP or Unix socket that can be spliced now or once it has connected. */
export function checkSocket (name: string, socket: unknown): asserts socket is net.Socket {
  if (socket instanceof net.Server) throw systemError('EINVAL', 'splice', `${name} is a listening socket`)
  if (!(socket instanceof net.Socket)) throw invalidArgType(name, 'an instance of net.Socket', socket)
  // The kernel would move ciphertext: there is no kernel TLS in Node.
  if (socket instanceof tls.TLSSocket) {
    throw systemError('EINVAL', 'splice', `${name} is a TLS socket, whose bytes on the wire are ciphertext: ` +
      'splice the TCP socket before its handshake, or pass TLS through untouched by splicing the raw sockets')
  }
  if (socket.destroyed) throw systemError('EBADF', 'splice', `${name} is destroyed`)
  // `pending`: no connection yet, either never asked for or still under way.
  if ((socket.pending && !socket.connecting) || socket.readyState === 'closed') {
    throw systemError('ENOTCONN', 'splice', `${name} is not connected`)
  }
  const kind = handleKind(socket)
  if (kind !== 'TCP' && kind !== 'Pipe') {
    throw systemError('EINVAL', 'splice', `${name} carries a JavaScript stream (${kind}), not a kernel socket`)
  }
  if (socket.readableEncoding !== null) {
    throw systemError('EINVAL', 'splice', `${name} has an encoding set: bytes would no longer be bytes`)
  }
}
