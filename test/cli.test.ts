import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import path from 'node:path'

const cli = path.join(__dirname, '..', 'lib', 'cli.js')

function run (...args: string[]): Promise<{ code: number, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    execFile(process.execPath, [cli, ...args], { timeout: 60000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr })
    })
  })
}

describe('sosplice bench (command line)', () => {
  it('--help prints the usage and exits 0', async () => {
    const { code, stdout } = await run('--help')
    assert.equal(code, 0)
    assert.match(stdout, /Usage: sosplice bench/)
  })

  for (const [args, message] of [
    [['bnech'], /unknown command: bnech/],
    [['bench', '--runs', '0'], /--runs must be a whole number/],
    [['bench', '--size', 'lots'], /--size: not a size/],
    [['bench', '--backends', 'pipe,warp'], /--backends: warp is not one of/],
    [['bench', '--frobnicate'], /Unknown option '--frobnicate'/]
  ] as const) {
    it(`rejects ${args.join(' ')} with exit code 2 and a message`, async () => {
      const { code, stdout, stderr } = await run(...args)
      assert.equal(code, 2)
      assert.equal(stdout, '')
      assert.match(stderr, message)
    })
  }

  it('--json: one document with a positive figure for every case', async () => {
    const { code, stdout } = await run('bench', '--json', '--size', '8M', '--runs', '2')
    assert.equal(code, 0)
    const doc = JSON.parse(stdout)
    assert.equal(doc.size, 8 << 20)
    const names = doc.results.map((r: { name: string }) => r.name)
    assert.ok(names.includes('userspace') && names.includes('node-pipe') && names.includes('direct'))
    for (const r of doc.results) {
      assert.equal(r.runs.length, 2)
      assert.ok(r.gbits.median > 0 && r.gbits.min <= r.gbits.median && r.gbits.median <= r.gbits.max, r.name)
      if (r.name !== 'direct') assert.ok(r.sysPerGB.median + r.userPerGB.median > 0, `${r.name} used no CPU`)
    }
  })
})
