import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { backends } from '../lib/index.js'

const root = path.join(__dirname, '..', '..')
const exec = promisify(execFile)

describe('the packed package', function () {
  this.timeout(300000)
  let tmp: string

  before(() => { tmp = mkdtempSync(path.join(os.tmpdir(), 'sosplice-pack-')) })
  after(() => rmSync(tmp, { recursive: true, force: true }))

  it('installs from its tarball with a prebuild, without a compiler, and loads', async () => {
    // Pack what `files` ships, then give it a prebuild made from these very
    // sources, built apart from the working tree (prebuildify builds in cwd).
    await exec('npm', ['pack', '--ignore-scripts', '--pack-destination', tmp], { cwd: root })
    const [tarball] = readdirSync(tmp).filter(f => f.endsWith('.tgz'))
    const unpacked = path.join(tmp, 'unpacked')
    mkdirSync(unpacked)
    await exec('tar', ['xzf', path.join(tmp, tarball), '-C', unpacked])
    const pkg = path.join(unpacked, 'package')
    assert.ok(existsSync(path.join(pkg, 'dist', 'lib', 'index.d.ts')), 'types are shipped')
    assert.ok(!existsSync(path.join(pkg, 'dist', 'test')), 'tests are not shipped')
    rmSync(path.join(pkg, 'prebuilds'), { recursive: true, force: true })
    symlinkSync(path.join(root, 'node_modules'), path.join(pkg, 'node_modules'))
    await exec(process.execPath, [path.join(root, 'node_modules', 'prebuildify', 'bin.js'), '--napi', '--strip'],
      { cwd: pkg })
    rmSync(path.join(pkg, 'node_modules'))
    rmSync(path.join(pkg, 'build'), { recursive: true })
    const prebuilt = path.join(pkg, 'prebuilds', `${process.platform}-${process.arch}`)
    assert.ok(readdirSync(prebuilt).some(f => f.endsWith('.node')), 'prebuildify wrote a prebuild')
    await exec('tar', ['czf', path.join(tmp, 'sosplice.tgz'), '-C', unpacked, 'package'])

    // A new project installs it; any compiler it tried to run would fail.
    const app = path.join(tmp, 'app')
    mkdirSync(app)
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }))
    const noCompiler = { ...process.env, CC: 'false', CXX: 'false', npm_config_build_from_source: 'false' }
    await exec('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(tmp, 'sosplice.tgz')],
      { cwd: app, env: noCompiler })
    assert.ok(!existsSync(path.join(app, 'node_modules', 'sosplice', 'build')), 'nothing was compiled')

    const { stdout } = await exec(process.execPath, ['-p', 'JSON.stringify(require("sosplice").backends())'], { cwd: app })
    assert.deepEqual(JSON.parse(stdout), backends(), 'the installed copy has the same backends as this build')
    // The recipes run from the install as the README shows.
    const recipes = await exec(process.execPath, ['-p', `Object.keys({
      ...require('sosplice/dist/examples/connect-proxy.js'), ...require('sosplice/dist/examples/upgrade-proxy.js'),
      ...require('sosplice/dist/examples/sni-router.js'), ...require('sosplice/dist/examples/proxy-protocol.js') }).join()`], { cwd: app })
    assert.equal(recipes.stdout.trim(), 'connectProxy,upgradeProxy,sniRouter,serverName,proxyProtocolProxy,proxyHeader')
    const help = await exec(path.join(app, 'node_modules', '.bin', 'sosplice'), ['--help'], { cwd: app })
    assert.match(help.stdout, /Usage: sosplice <command>/)
  })
})
