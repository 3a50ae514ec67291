import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { backends } from '../lib/index.js'
import { checkProxyReport, exec, install, linkTests, noCompiler, pack, root } from './tarball.js'

describe('the packed package', function () {
  this.timeout(300000)
  let tmp: string

  before(() => { tmp = mkdtempSync(path.join(os.tmpdir(), 'sosplice-pack-')) })
  after(() => rmSync(tmp, { recursive: true, force: true }))

  describe('with a prebuild for this host, made from these sources', () => {
    let app: string

    before(async () => {
      app = path.join(tmp, 'app')
      await install(await pack(tmp, 'prebuild'), app)
    })

    it('installs from its tarball without a compiler, and loads the prebuild', async () => {
      const pkg = path.join(app, 'node_modules', 'sosplice')
      assert.ok(existsSync(path.join(pkg, 'dist', 'lib', 'index.d.ts')), 'types are shipped')
      assert.ok(!existsSync(path.join(pkg, 'dist', 'test')), 'tests are not shipped')
      assert.ok(!existsSync(path.join(pkg, 'build')), 'nothing was compiled')
      const { stdout } = await exec(process.execPath, [path.join(pkg, 'dist', 'lib', 'cli', 'index.js'), 'doctor', '--json'],
        { cwd: app })
      const doctor = JSON.parse(stdout)
      assert.deepEqual(doctor.backends, backends(), 'the installed copy has the same backends as this build')
      if (backends().length > 1) {
        assert.equal(path.relative(pkg, doctor.addon), path.join('prebuilds', `${process.platform}-${process.arch}`,
          `sosplice${process.platform === 'linux' ? '.glibc' : ''}.node`))
      }
    })

    it('runs the recipes and the command line as the README shows', async () => {
      const recipes = await exec(process.execPath, ['-p', `Object.keys({
        ...require('sosplice/dist/examples/connect-proxy.js'), ...require('sosplice/dist/examples/upgrade-proxy.js'),
        ...require('sosplice/dist/examples/sni-router.js'), ...require('sosplice/dist/examples/proxy-protocol.js') }).join()`],
      { cwd: app })
      assert.equal(recipes.stdout.trim(), 'connectProxy,upgradeProxy,sniRouter,serverName,proxyProtocolProxy,proxyHeader')
      const help = await exec(path.join(app, 'node_modules', '.bin', 'sosplice'), ['--help'], { cwd: app })
      assert.match(help.stdout, /Usage: sosplice <command>/)
    })

    it('is imported from ESM and required from CommonJS: one module, the same names', async () => {
      writeFileSync(path.join(app, 'esm.mjs'), `
        import { proxy } from 'sosplice'
        import * as esm from 'sosplice'
        import { createRequire } from 'node:module'
        const cjs = createRequire(import.meta.url)('sosplice')
        console.log(JSON.stringify({
          same: proxy === cjs.proxy && esm.splice === cjs.splice,
          esm: Object.keys(esm).filter(name => name !== '__esModule').sort(),
          cjs: Object.keys(cjs).sort()
        }))`)
      const { stdout } = await exec(process.execPath, ['esm.mjs'], { cwd: app })
      const seen = JSON.parse(stdout)
      assert.equal(seen.same, true, 'ESM gets the CommonJS build, not a second copy')
      assert.deepEqual(seen.esm, seen.cjs)
      assert.deepEqual(seen.cjs, ['Splice', 'backends', 'getSplice', 'proxy', 'setSplice', 'splice'])
    })

    it('has types for both: an .mts import and a .cts require type-check under nodenext', async () => {
      writeFileSync(path.join(app, 'check.mts'), `
        import { proxy, type ProxyResult } from 'sosplice'
        import { connectProxy } from 'sosplice/dist/examples/connect-proxy.js'
        export const run: (a: import('node:net').Socket, b: import('node:net').Socket) => Promise<ProxyResult> = proxy
        export const server = connectProxy()`)
      writeFileSync(path.join(app, 'check.cts'), `
        import sosplice = require('sosplice')
        export const names: sosplice.BackendName[] = sosplice.backends()`)
      writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
        compilerOptions: {
          module: 'nodenext', strict: true, noEmit: true, types: ['node'], typeRoots: [path.join(root, 'node_modules', '@types')]
        },
        files: ['check.mts', 'check.cts']
      }))
      await exec(path.join(root, 'node_modules', '.bin', 'tsc'), ['-p', app])
      // The check can fail: a name the types lack is an error.
      writeFileSync(path.join(app, 'check.cts'), "import sosplice = require('sosplice')\nexport const x = sosplice.nothing")
      await assert.rejects(exec(path.join(root, 'node_modules', '.bin', 'tsc'), ['-p', app]),
        (err: { stdout: string }) => /Property 'nothing' does not exist/.test(err.stdout))
    })
  })

  describe('without a prebuild or a compiler', () => {
    let app: string
    let installed: string

    before(async () => {
      app = path.join(tmp, 'bare')
      const { stdout, stderr } = await install(await pack(tmp), app)
      installed = stdout + stderr
      linkTests(app)
    })

    it('Linux: installs all the same, warns at install and at run time, doctor says why, runs on userspace', async function () {
      if (process.platform !== 'linux') {
        this.test!.title += ` (skipped: the warnings checked are Linux's; this is ${process.platform})`
        this.skip()
      }
      assert.match(installed, new RegExp(`sosplice: WARNING: no native addon for linux-${process.arch}\\.`))
      assert.match(installed, /prebuild: No native build was found for platform=linux/)
      assert.match(installed, /compile: make: .*Error 1/, 'the compile\'s failing line (make\'s, since the compiler is `false`)')
      assert.match(installed, /Only the userspace backend will be available/)

      const loaded = await exec(process.execPath, ['-p', 'JSON.stringify(require("sosplice").backends())'], { cwd: app })
      assert.deepEqual(JSON.parse(loaded.stdout), ['userspace'])
      assert.match(loaded.stderr, /\[SOSPLICE_NO_ADDON\] Warning: sosplice: the native addon did not load \(no prebuild, and compiling failed: make: .*Error 1\); only the userspace backend is available/)

      const doctor = await exec(process.execPath, [path.join(app, 'node_modules', '.bin', 'sosplice'), 'doctor'], { cwd: app })
        .then(() => assert.fail('doctor exits 1 when a kernel backend is missing'), err => err)
      assert.equal(doctor.code, 1)
      assert.match(doctor.stdout, /addon: not loaded\nbackends, best first: userspace\n/)
      assert.match(doctor.stdout, /no pipe: no prebuild \(No native build was found .*\), and compiling failed: make: .*Error 1/)

      // Its flows' stray datagrams are taken out by the addon: without it, no UDP relay.
      const udp = await exec(path.join(app, 'node_modules', '.bin', 'sosplice'), ['proxy', '--udp', '--listen', '0', '--to', '127.0.0.1:9'], { cwd: app })
        .then(() => assert.fail('proxy --udp exits 1 without the addon'), err => err)
      assert.equal(udp.code, 1)
      assert.match(udp.stderr, /sosplice proxy: --udp needs the native addon, which did not load/)

      const report = checkProxyReport((await exec(process.execPath, [path.join(app, 'test', 'proxy-check.js'), '4'])).stdout)
      assert.equal(report.backend, 'userspace')
    })

    it('a platform with no kernel path (darwin, faked): compiles nothing, warns of nothing, doctor says why, userspace runs', async () => {
      const fake = path.join(tmp, 'darwin.js')
      writeFileSync(fake, "Object.defineProperty(process, 'platform', { value: 'darwin' })\n")
      const pkg = path.join(app, 'node_modules', 'sosplice')
      rmSync(path.join(pkg, 'build'), { recursive: true, force: true })
      const script = await exec(process.execPath, ['-r', fake, path.join(pkg, 'scripts', 'install.js')],
        { env: { ...process.env, ...noCompiler } })
      assert.equal(script.stderr, 'sosplice: darwin has no kernel socket splicing; the userspace backend will be used\n')
      assert.ok(!existsSync(path.join(pkg, 'build')), 'no compile was tried')

      const doctor = await exec(process.execPath, ['-r', fake, path.join(pkg, 'dist', 'lib', 'cli', 'index.js'), 'doctor'])
      assert.equal(doctor.stderr, '', 'no warning')
      assert.match(doctor.stdout, /^darwin-\w+, Node v[\d.]+\naddon: not loaded\nbackends, best first: userspace\n/)
      assert.match(doctor.stdout, /no pipe: pipe is a kernel path of Linux only, not of darwin/)
      assert.match(doctor.stdout, /no so_splice: so_splice is a kernel path of FreeBSD and OpenBSD only, not of darwin/)

      const report = checkProxyReport((await exec(process.execPath, ['-r', fake, path.join(app, 'test', 'proxy-check.js'), '4'])).stdout)
      assert.equal(report.backend, 'userspace')
    })
  })
})
