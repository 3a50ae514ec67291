import os from 'node:os'
import util from 'node:util'

// Errors shaped like Node's own: system errors carry errno, code and syscall
// (as the addon's do), argument errors carry Node's ERR_* codes.

export function systemError(code: string, syscall: string, detail?: string): NodeJS.ErrnoException {
  const errno = (os.constants.errno as Record<string, number>)[code]
  const description = util.getSystemErrorMap().get(-errno)?.[1] ?? code
  const err: NodeJS.ErrnoException = new Error(
    `${syscall} ${code} (${description})${detail ? `: ${detail}` : ''}`
  )
  err.errno = -errno
  err.code = code
  err.syscall = syscall
  return err
}

function coded<E extends Error>(err: E, code: string): E & { code: string } {
  return Object.assign(err, { code })
}

export function invalidArgType(name: string, expected: string, actual: unknown) {
  return coded(new TypeError(`The "${name}" argument must be ${expected}. Received ${describe(actual)}`),
    'ERR_INVALID_ARG_TYPE')
}

export function outOfRange(name: string, range: string, actual: unknown) {
  return coded(new RangeError(`The value of "${name}" is out of range. It must be ${range}. Received ${describe(actual)}`),
    'ERR_OUT_OF_RANGE')
}

export function invalidArgValue(name: string, reason: string, actual: unknown) {
  return coded(new TypeError(`The argument '${name}' ${reason}. Received ${describe(actual)}`),
    'ERR_INVALID_ARG_VALUE')
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return String(value)
  if (typeof value === 'object') return `an instance of ${value.constructor?.name ?? 'Object'}`
  return `${typeof value} ${util.inspect(value)}`
}
