import net from 'node:net'
import { invalidArgType, outOfRange, systemError } from './errors.js'

export interface Limits {
  /** Bytes; unsplice after exactly this many. 0 or absent: no limit. */
  max?: number
  /** Milliseconds without a byte moved before unsplicing. 0 or absent: none. */
  idle?: number
}

export function checkLimits (options: unknown): Required<Limits> {
  if (options === undefined) return { max: 0, idle: 0 }
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options)
  const { max, idle } = options as Limits
  return { max: checkCount('max', max), idle: checkCount('idle', idle) }
}

/** A whole number of bytes or milliseconds; absent is 0. */
export function checkCount (name: string, value: unknown): number {
  if (value === undefined) return 0
  if (typeof value !== 'number') throw invalidArgType(`options.${name}`, 'of type number', value)
  if (!Number.isSafeInteger(value) || value < 0) {
    throw outOfRange(`options.${name}`, `an integer >= 0 and <= ${Number.MAX_SAFE_INTEGER}`, value)
  }
  return value
}

export function checkFd (name: string, fd: unknown): number {
  if (typeof fd !== 'number') throw invalidArgType(name, 'of type number', fd)
  if (!Number.isInteger(fd)) throw outOfRange(name, 'an integer', fd)
  if (fd < 0) throw systemError('EBADF', 'splice', `${name} is ${fd}`)
  return fd
}

/** A Node TCP socket that can be spliced now or once it has connected. */
export function checkSocket (name: string, socket: unknown): net.Socket {
  if (socket instanceof net.Server) throw systemError('EINVAL', 'splice', `${name} is a listening socket`)
  if (!(socket instanceof net.Socket)) throw invalidArgType(name, 'an instance of net.Socket', socket)
  if (socket.destroyed) throw systemError('EBADF', 'splice', `${name} is destroyed`)
  // `pending`: no connection yet, either never asked for or still under way.
  if ((socket.pending && !socket.connecting) || socket.readyState === 'closed') {
    throw systemError('ENOTCONN', 'splice', `${name} is not connected`)
  }
  if (socket.readableEncoding !== null) {
    throw systemError('EINVAL', 'splice', `${name} has an encoding set: bytes would no longer be bytes`)
  }
  return socket
}
