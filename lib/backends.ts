import type net from 'node:net'
import { invalidArgValue, systemError } from './errors.js'
import { handleKind } from './handover.js'
import { kernelMover } from './kernel-mover.js'
import type { StartMover } from './mover.js'
import { loadError, native } from './native.js'
import { userspaceMover } from './userspace-mover.js'

export type BackendName = 'so_splice' | 'pipe' | 'userspace'

const names: readonly string[] = ['so_splice', 'pipe', 'userspace']

/** The backends this host can run, best first: what `'auto'` picks from. */
export function backends (): BackendName[] {
  return native ? [native.backend, 'userspace'] : ['userspace']
}

export interface Backend {
  name: BackendName
  start: StartMover
  /** Throws at once what `start` would refuse (kernel backends). */
  check?: (source: net.Socket, drain: net.Socket) => void
}

const userspace: Backend = { name: 'userspace', start: userspaceMover }
const kernel: Backend | undefined = native && {
  name: native.backend,
  start: kernelMover(native),
  // Run for every staged splice, so no system call: a TCP socket and a Unix
  // one are never spliced together; the addon checks the rest as it starts.
  check: (source, drain) => {
    if (handleKind(source) !== handleKind(drain)) {
      throw systemError('EPROTONOSUPPORT', 'splice', `a ${handleKind(source)} source and a ${handleKind(drain)} drain`)
    }
  }
}

export function pickBackend (name: unknown = 'auto'): Backend {
  if (name === 'auto') name = backends()[0]
  if (typeof name !== 'string' || !names.includes(name)) {
    throw invalidArgValue('options.backend', `must be 'auto' or one of ${names.join(', ')}`, name)
  }
  if (name === 'userspace') return userspace
  if (!kernel || kernel.name !== name) {
    const why = native ? `this host has ${native.backend}` : `the addon did not load: ${loadError?.message}`
    throw systemError('EPROTONOSUPPORT', 'splice', `backend ${name} is not available (${why})`)
  }
  return kernel
}
