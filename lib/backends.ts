import { invalidArgValue, systemError } from './errors.js'
import { loadError, native, type NativeBinding } from './native.js'

export type BackendName = 'so_splice' | 'pipe' | 'userspace'

const names: readonly string[] = ['so_splice', 'pipe', 'userspace']

/** The backends this host can run, best first: what `'auto'` picks from. */
export function backends (): BackendName[] {
  return native ? [native.backend, 'userspace'] : ['userspace']
}

export interface Backend {
  name: BackendName
  /** The addon, for a kernel backend; userspace copies in JavaScript. */
  native?: NativeBinding
  /** Chosen by `'auto'` rather than asked for by name. */
  auto: boolean
}

export function pickBackend (name: unknown = 'auto'): Backend {
  const auto = name === 'auto'
  if (auto) name = backends()[0]
  if (typeof name !== 'string' || !names.includes(name)) {
    throw invalidArgValue('options.backend', `must be 'auto' or one of ${names.join(', ')}`, name)
  }
  if (name === 'userspace') return { name, auto }
  if (!native || native.backend !== name) {
    const why = native ? `this host has ${native.backend}` : `the addon did not load: ${loadError?.message}`
    throw systemError('EPROTONOSUPPORT', 'splice', `backend ${name} is not available (${why})`)
  }
  return { name: native.backend, native, auto }
}
