import { type ChildProcess, spawn, type StdioOptions } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import type { Ran } from './helpers.js'

// Child processes for what a test cannot do to its own process: lower its
// descriptor limit, run as another user, own blocking sockets.

/** A compiled script beside this one (dist/test/<name>.js). */
export function script (name: string): string {
  return path.join(__dirname, `${name}.js`)
}

/** Whether `tool` is on the PATH. */
export function hasTool (tool: string): boolean {
  return (process.env.PATH ?? '').split(':').some(dir => {
    try {
      fs.accessSync(path.join(dir, tool), fs.constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

/**
 * Starts `argv` (argv[0] is looked up on the PATH; 'node' is this Node) and
 * collects its output; after `ms` it is killed, and `code` is null.
 */
export function start (argv: string[], opts: { stdio?: StdioOptions, ms?: number } = {}): { child: ChildProcess, done: Promise<Ran> } {
  const [command, ...args] = argv.map(a => a === 'node' ? process.execPath : a)
  const child = spawn(command, args, { stdio: opts.stdio ?? ['ignore', 'pipe', 'pipe'] })
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.ms ?? 60000)
  let stdout = ''
  let stderr = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d })
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d })
  const done = new Promise<Ran>(resolve => {
    child.on('close', code => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
  return { child, done }
}

/** The last line of `output` (a child's stdout or stderr), as JSON: what the child reports. */
export function report<T> (ran: Ran, output = ran.stdout): T {
  const last = output.trim().split('\n').pop() ?? ''
  try {
    return JSON.parse(last) as T
  } catch {
    throw new Error(`the child (exit ${ran.code}) reported no result: ${ran.stdout}\n${ran.stderr}`)
  }
}
