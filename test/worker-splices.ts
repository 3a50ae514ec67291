import { parentPort, workerData } from 'node:worker_threads'
import { splice } from '../lib/index.js'
import { rig, send } from './helpers.js'

// A worker thread (workers.test.ts) that loads the package, splices, and
// ends while the splices are at every stage: 'started' (none has run yet),
// 'exit' (bytes flowing, more just handed to the engine), 'terminate' (bytes
// flowing, ended from outside).

const COUNT = 20
const mode = workerData as 'started' | 'exit' | 'terminate'

type Rig = Awaited<ReturnType<typeof rig>>

function flow (rigs: Rig[], seed: string) {
  for (const [i, r] of rigs.entries()) {
    splice(r.source, r.drain, { backend: 'pipe' })
    send(r.sender, `${seed}-${i}`, 64 << 20, { end: false }).catch(() => undefined)
  }
}

/** Resolves once `n` bytes have reached each receiver. */
function arrived (rigs: Rig[], n: number): Promise<unknown> {
  return Promise.all(rigs.map(r => new Promise<void>(resolve => {
    let got = 0
    r.receiver.on('data', (d: Buffer) => {
      got += d.length
      if (got >= n) resolve()
    })
  })))
}

async function main () {
  const rigs: Rig[] = []
  for (let i = 0; i < 2 * COUNT; i++) rigs.push(await rig())
  const first = rigs.slice(0, COUNT)
  flow(first, 'first')
  // Started: run() waits for a promise, so none has reached the engine's workers.
  if (mode === 'started') process.exit(0)
  await arrived(first, 256 * 1024)
  if (mode === 'terminate') return parentPort!.postMessage('flowing')
  // Handed to the engine's workers (run() is called once a promise has
  // settled), which are unlikely to have taken them all yet.
  flow(rigs.slice(COUNT), 'second')
  for (let i = 0; i < 3; i++) await Promise.resolve()
  process.exit(0)
}

main().catch(err => {
  console.error(err)
  process.exit(1)
})
