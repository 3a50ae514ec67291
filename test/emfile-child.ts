import assert from 'node:assert/strict'
import fs from 'node:fs'
import { splice } from '../lib/index.js'
import { native } from '../lib/native.js'
import { receive, rig, send } from './helpers.js'

// Run by emfile.test.ts under a low descriptor limit: fills the descriptor
// table, frees k descriptors, and tries a kernel splice each time.

type Rig = Awaited<ReturnType<typeof rig>>

const held: number[] = []

function fill () {
  try {
    for (;;) held.push(fs.openSync('/dev/null', 'r'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EMFILE') throw err
  }
}

/** 'moved' (every byte, then eof), or where EMFILE came: 'thrown' or 'ended'. */
async function attempt (r: Rig, seed: string): Promise<string> {
  const received = receive(r.receiver)
  let sp
  try {
    sp = splice(r.source, r.drain, { backend: 'pipe' })
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'EMFILE', String(err))
    return 'thrown'
  }
  const sent = await send(r.sender, seed, 256 * 1024)
  const result = await sp.done
  if (result.reason === 'error') {
    assert.equal((result.error as NodeJS.ErrnoException).code, 'EMFILE', String(result.error))
    return 'ended'
  }
  assert.deepEqual(result, { bytes: sent.length, reason: 'eof' })
  assert.deepEqual(await received, sent)
  return 'moved'
}

async function main () {
  const rigs: Rig[] = []
  for (let k = 0; k <= 9; k++) rigs.push(await rig())
  const outcomes: { free: number, outcome: string, workers: number }[] = []
  for (let free = 0; free <= 8; free++) {
    fill()
    for (let i = 0; i < free; i++) fs.closeSync(held.pop()!)
    const outcome = await attempt(rigs[free], `emfile-${free}`)
    outcomes.push({ free, outcome, workers: native!.stats().workers })
  }
  for (const fd of held) fs.closeSync(fd)
  const last = await attempt(rigs[9], 'emfile-last')
  for (const r of rigs) r.destroy()
  console.log(JSON.stringify({ outcomes, last }))
}

main().catch(err => {
  console.error(err)
  process.exit(1)
})
