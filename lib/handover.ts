import type net from 'node:net'
import util from 'node:util'
import { systemError } from './errors.js'

// Taking a Node socket over from Node, and giving it back. Node reads ahead
// into its own buffer; while native code owns the descriptor Node must not
// read it, and what Node already holds must be delivered first.

interface StreamHandle {
  fd: number
  reading: boolean
  readStop (): number
}

interface Internals {
  _handle: (StreamHandle & { constructor: { name: string } }) | null
  _read (size: number): void
}

function internals (socket: net.Socket): Internals {
  return socket as unknown as Internals
}

/** The socket's descriptor. Node owns it: never close it. */
export function fdOf (socket: net.Socket): number {
  const fd = internals(socket)._handle?.fd
  if (typeof fd !== 'number' || fd < 0) throw systemError('EBADF', 'splice', 'the socket has no file descriptor')
  return fd
}

/** What carries the socket in Node: 'TCP', or 'Pipe' for a Unix socket. */
export function handleKind (socket: net.Socket): string | undefined {
  return internals(socket)._handle?.constructor.name
}

export interface Hold {
  /**
   * Gives reading back to Node; `eof`: the relay read the source to its
   * end of file, which Node then learns without reading it again.
   */
  release (eof: boolean): void
}

/**
 * Stops Node reading `socket` until the hold is released, which gives it
 * back in the `flowing` state (see restoreFlowing).
 */
export function holdReading (socket: net.Socket, flowing = socket.readableFlowing): Hold {
  const s = internals(socket)
  socket.pause()
  // pause() alone leaves libuv reading until Node's buffer is full. Node
  // starts reading only when it thinks the handle is not (`reading`): a
  // resume() or a 'data' listener while held then starts nothing. Nothing
  // is added to the socket itself, which would cost V8 its shape.
  const handle = s._handle
  if (handle) {
    const status = handle.readStop()
    if (status < 0) throw systemError(util.getSystemErrorName(status), 'uv_read_stop')
    handle.reading = true
  }
  return {
    release (eof) {
      if (socket.destroyed || !handle) return
      handle.reading = false
      // Node may be waiting for a read it started before the hold, or one
      // asked for during it: restart reading, as Node does for a new socket.
      // At an EOF there is nothing left to read: Node is told, as its own
      // read would have (a readStart, a read and a readStop fewer).
      if (eof) {
        socket.push(null)
        socket.read(0)
      } else {
        s._read(socket.readableHighWaterMark)
      }
      restoreFlowing(socket, flowing)
    }
  }
}

/**
 * Gives `socket` back in the flowing state it had before a splice paused
 * it: flowing again, still paused, or (null) neither, so that a 'data'
 * listener added later starts the flow as on any new socket. One added
 * while the splice ran starts it now.
 */
export function restoreFlowing (socket: net.Socket, flowing: boolean | null): void {
  if (flowing === false) return
  if (flowing === true || socket.listenerCount('data') > 0) socket.resume()
  else (socket as { readableFlowing: boolean | null }).readableFlowing = null
}

/**
 * Ends Node's writable side of a socket whose write side the engine has
 * already shut down: Node finishes without a shutdown(2) of its own, which
 * would cost a loop turn, two epoll changes and a failing system call.
 * Marked prefinished, Node skips `_final` (the shutdown) and finishes at
 * once; with anything still queued it shuts down as usual.
 */
export function endShut (socket: net.Socket): void {
  if (!socket.writableEnded && socket.writableLength === 0) {
    (socket as unknown as { _writableState: { prefinished: boolean } })._writableState.prefinished = true
  }
  socket.end()
}

/** Takes the first `n` of the bytes Node has already read. */
export function takeBuffered (socket: net.Socket, n: number): Buffer {
  return n === 0 ? Buffer.alloc(0) : socket.read(n) as Buffer
}

/** Resolves once `chunk` and every write queued before it is flushed. */
export function writeFlushed (socket: net.Socket, chunk: Buffer): Promise<Error | undefined> {
  if (chunk.length === 0 && socket.writableLength === 0) return Promise.resolve(undefined)
  return new Promise(resolve => socket.write(chunk, err => resolve(err ?? undefined)))
}

/**
 * Node never sees the bytes a kernel splice moves, so a socket's inactivity
 * timer (`socket.setTimeout`) would fire during a busy transfer. While one
 * of `sockets` has a timeout, restart their timers whenever `count` has
 * grown, looking at half the shortest timeout. Returns the stop function.
 */
export function keepTimeoutsAlive (sockets: net.Socket[], count: () => number): () => void {
  const shortest = Math.min(...sockets.map(s => s.timeout || Infinity))
  if (shortest === Infinity) return () => {}
  let last = count()
  const timer = setInterval(() => {
    if (count() === last) return
    last = count()
    for (const s of sockets) if (s.timeout) s.setTimeout(s.timeout)
  }, Math.ceil(shortest / 2)).unref()
  return () => clearInterval(timer)
}
