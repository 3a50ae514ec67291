import type net from 'node:net'
import { invalidArgValue, systemError } from './errors.js'
import { fdOf } from './handover.js'
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

export function pickBackend (name: unknown = 'auto'): Backend {
  if (name === 'auto') name = backends()[0]
  if (typeof name !== 'string' || !names.includes(name)) {
    throw invalidArgValue('options.backend', `must be 'auto' or one of ${names.join(', ')}`, name)
  }
  if (name === 'userspace') return { name, start: userspaceMover }
  if (!native || native.backend !== name) {
    const why = native ? `this host has ${native.backend}` : `the addon did not load: ${loadError?.message}`
    throw systemError('EPROTONOSUPPORT', 'splice', `backend ${name} is not available (${why})`)
  }
  const binding = native
  return {
    name: binding.backend,
    start: kernelMover(binding),
    check: (source, drain) => binding.check(fdOf(source), fdOf(drain))
  }
}
