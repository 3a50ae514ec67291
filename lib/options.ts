import net from 'node:net'
import tls from 'node:tls'
import { invalidArgType, outOfRange, systemError } from './errors.js'
import { handleKind } from './handover.js'

export interface Limits {
  /** Bytes; unsplice after exactly this many. 0 or absent: no limit. */
  max?: number
  /** Milliseconds without a byte moved before unsplicing, at most `maxIdle`. 0 or absent: none. */
  idle?: number
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
export function checkSocket (name: string, socket: unknown): net.Socket {
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
  return socket
}
