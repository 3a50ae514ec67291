import assert from 'node:assert/strict'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { nodeBinary } from './node-binary.js'
import { checkProxyReport, exec, install, linkTests, pack, root } from './tarball.js'

// `npm run test:node-versions`: the packed tarball (with this host's
// prebuild) on every Node major that `engines` admits, each binary from the
// node-linux-<arch> package of the npm registry. Each installs it without a
// compiler, proxies bytes, and runs the transfer, endings, errors and UDP tests
// against the install.

const majors = [20, 22, 24]
const suites = ['transfer', 'endings', 'errors', 'udp']

describe('the packed package on each supported Node', function () {
  this.timeout(600000)
  let tmp: string
  let tarball: string

  before(async function () {
    if (process.platform !== 'linux') {
      this.test!.parent!.title += ` (skipped: Node's npm packages are fetched for Linux; this is ${process.platform})`
      this.skip()
    }
    tmp = mkdtempSync(path.join(os.tmpdir(), 'sosplice-versions-'))
    tarball = await pack(tmp, 'prebuild')
  })
  after(() => { if (tmp) rmSync(tmp, { recursive: true, force: true }) })

  for (const major of majors) {
    describe(`Node ${major}`, () => {
      let app: string
      let node: string
      let env: NodeJS.ProcessEnv

      before(async () => {
        node = await nodeBinary(`node-linux-${process.arch}@${major}`)
        // npm, the install script and the tests' child processes all run this node.
        env = { ...process.env, PATH: `${path.dirname(node)}${path.delimiter}${process.env.PATH}` }
        app = path.join(tmp, `node${major}`)
        await install(tarball, app, env)
        linkTests(app)
      })

      it('installs the tarball without a compiler, loads the prebuild and proxies 16 MiB each way', async function () {
        assert.ok(!existsSync(path.join(app, 'node_modules', 'sosplice', 'build')), 'nothing was compiled')
        const report = checkProxyReport((await exec(node, [path.join(app, 'test', 'proxy-check.js'), '16'], { env })).stdout)
        assert.match(report.node, new RegExp(`^v${major}\\.`))
        assert.deepEqual(report.backends, ['pipe', 'userspace'])
        assert.equal(path.basename(path.dirname(report.addon ?? '')), `linux-${process.arch}`, 'the prebuild was loaded')
        this.test!.title += ` (${report.node}, ${report.backend})`
      })

      it(`passes the ${suites.join(', ')} tests`, async function () {
        const results = path.join(app, 'results.json')
        const mocha = path.join(root, 'node_modules', 'mocha', 'bin', 'mocha.js')
        await exec(node, [mocha, '--no-config', '--exit', '--timeout', '60000', '--reporter', 'json',
          '--reporter-option', `output=${results}`, ...suites.map(name => `test/${name}.test.js`)], { cwd: app, env })
          .catch(() => { /* failures are read from the results below */ })
        const { stats, failures } = JSON.parse(readFileSync(results, 'utf8'))
        assert.deepEqual(failures.map((f: { fullTitle: string }) => f.fullTitle), [])
        assert.ok(stats.passes > 0, 'tests ran')
        this.test!.title += `: ${stats.passes} passing, ${stats.pending} pending`
      })
    })
  }
})
