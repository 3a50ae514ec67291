import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { cpSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'

// The package as users get it: packed, installed into a new project with no
// compiler, and run there. Shared by the pack test and the install matrix.

export const root = path.join(__dirname, '..', '..')
export const exec = promisify(execFile)

/**
 * Packs what `files` ships into `dir`/package, with the prebuilds the npm
 * script `prebuilds` makes (none when undefined), built in the unpacked copy
 * rather than the working tree (prebuildify builds in its cwd); returns the
 * repacked tarball.
 */
export async function pack (dir: string, prebuilds?: 'prebuild' | 'prebuild:all'): Promise<string> {
  const packed = await exec('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: root })
  const [{ filename: tarball }] = JSON.parse(packed.stdout)
  const unpacked = path.join(dir, 'unpacked')
  mkdirSync(unpacked)
  await exec('tar', ['xzf', path.join(dir, tarball), '-C', unpacked])
  rmSync(path.join(dir, tarball))
  const pkg = path.join(unpacked, 'package')
  rmSync(path.join(pkg, 'prebuilds'), { recursive: true, force: true })
  if (prebuilds) {
    symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'))
    await exec('npm', ['run', prebuilds], { cwd: pkg })
    rmSync(path.join(pkg, 'node_modules'))
    rmSync(path.join(pkg, 'build'), { recursive: true })
  }
  const repacked = path.join(dir, prebuilds ? `sosplice-${prebuilds.replace(':', '-')}.tgz` : 'sosplice-bare.tgz')
  await exec('tar', ['czf', repacked, '-C', unpacked, 'package'])
  rmSync(unpacked, { recursive: true })
  return repacked
}

/** With these, any compiler the install tried to run would fail. */
export const noCompiler = { CC: 'false', CXX: 'false', npm_config_build_from_source: 'false' }

/**
 * Installs `tarball` into a new project at `app` without a compiler, showing
 * the install script's output (npm hides it otherwise); `env` adds to or
 * overrides the environment (PATH for another node).
 */
export async function install (tarball: string, app: string, env: NodeJS.ProcessEnv = {}): Promise<{ stdout: string, stderr: string }> {
  mkdirSync(app)
  writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }))
  return exec('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', '--foreground-scripts', tarball],
    { cwd: app, env: { ...process.env, ...noCompiler, ...env } })
}

/**
 * Puts this checkout's compiled tests into `app`/test, with `app`/lib the
 * installed package's dist/lib: the tests' `../lib/index.js` is then the install.
 */
export function linkTests (app: string): void {
  cpSync(path.join(root, 'dist', 'test'), path.join(app, 'test'), { recursive: true })
  symlinkSync(path.join(app, 'node_modules', 'sosplice', 'dist', 'lib'), path.join(app, 'lib'))
}

export interface ProxyReport {
  arch: string
  node: string
  addon: string | null
  backends: string[]
  backend: string
}

/** Checks what proxy-check.js printed: every byte arrived both ways, and both directions ended with EOF. */
export function checkProxyReport (stdout: string): ProxyReport {
  const report = JSON.parse(stdout)
  assert.deepEqual(report.up.received, report.up.sent, 'client to server')
  assert.deepEqual(report.down.received, report.down.sent, 'server to client')
  assert.deepEqual(report.result, {
    aToB: { bytes: report.up.sent.length, reason: 'eof' },
    bToA: { bytes: report.down.sent.length, reason: 'eof' }
  })
  return report
}
