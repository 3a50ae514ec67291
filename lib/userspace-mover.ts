import { systemError } from './errors.js'
import { restoreFlowing } from './handover.js'
import type { Mover, StartMover } from './mover.js'
import { Reason } from './native.js'

/**
 * Moves bytes through JavaScript with the sockets' own reads and writes: the
 * same contract as the kernel backends, for hosts without one and as the
 * baseline they are measured against. Node's buffered bytes come first as
 * 'data' like any others, and writes queue behind the drain's earlier ones.
 */
export const userspaceMover: StartMover = (source, drain, max, idle, onEnd) => {
  let bytes = 0
  let ended = false
  const flowing = source.readableFlowing
  // Keeps the process alive while active, whatever the sockets' own refs,
  // as the kernel backends' splices do.
  const alive = setInterval(() => {}, 1 << 30)
  const timer = idle > 0 ? setTimeout(() => finish(Reason.Idle), idle).unref() : undefined

  function write (chunk: Buffer) {
    bytes += chunk.length
    timer?.refresh()
    if (!drain.write(chunk)) {
      source.pause()
      drain.once('drain', onDrain)
    }
  }

  function onData (chunk: Buffer) {
    if (drain.writableEnded) {
      // Ended from outside: the chunk goes back to the source, uncounted.
      source.pause()
      source.unshift(chunk)
      return finish(Reason.Error, systemError('EPIPE', 'write', 'the drain has been ended'))
    }
    const room = max - bytes
    if (max > 0 && chunk.length >= room) {
      // The bytes past max go back to the source for JavaScript to read.
      source.pause()
      if (chunk.length > room) source.unshift(chunk.subarray(room))
      write(chunk.subarray(0, room))
      return finish(Reason.Max)
    }
    write(chunk)
  }

  function onDrain () {
    timer?.refresh()
    source.resume()
  }

  const onEof = () => finish(Reason.Eof)

  function finish (reason: Reason, error?: Error) {
    if (ended) return
    ended = true
    clearTimeout(timer)
    clearInterval(alive)
    source.off('data', onData)
    source.off('end', onEof)
    drain.off('drain', onDrain)
    source.pause()
    restoreFlowing(source, flowing)
    onEnd({ bytes, reason, error })
  }

  source.on('data', onData)
  source.on('end', onEof)
  source.resume()
  if (source.readableEnded) process.nextTick(onEof)

  const mover: Mover = {
    get bytes () { return bytes },
    stop (reason, error) { finish(reason, error) },
    ref (on) { on ? alive.ref() : alive.unref() }
  }
  return mover
}
