import assert from 'node:assert/strict'
import fs from 'node:fs'
import { splice } from '../lib/index.js'
import { native } from '../lib/native.js'
import { digest, eventually, receive, rig, send, stream } from './helpers.js'

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

/**
 * A start refused with bytes Node had already read from the source (which
 * the pipe engine would have written first) leaves them in the source.
 */
async function refusedWithBytes (r: Rig): Promise<string> {
  const data = stream('emfile-held')(1000)
  r.sender.write(data)
  assert.ok(await eventually(() => r.source.readableLength === data.length), 'the bytes did not reach Node')
  fill()
  let code: string | undefined
  try {
    splice(r.source, r.drain, { backend: 'pipe' })
  } catch (err) {
    code = (err as NodeJS.ErrnoException).code
  }
  for (const fd of held.splice(0)) fs.closeSync(fd)
  assert.equal(code, 'EMFILE')
  assert.deepEqual(digest(r.source.read(data.length) as Buffer), digest(data))
  return 'given back'
}

async function main () {
  const rigs: Rig[] = []
  for (let k = 0; k <= 10; k++) rigs.push(await rig())
  const outcomes: { free: number, outcome: string, workers: number }[] = []
  for (let free = 0; free <= 8; free++) {
    fill()
    for (let i = 0; i < free; i++) fs.closeSync(held.pop()!)
    const outcome = await attempt(rigs[free], `emfile-${free}`)
    outcomes.push({ free, outcome, workers: native!.stats().workers })
  }
  for (const fd of held.splice(0)) fs.closeSync(fd)
  const last = await attempt(rigs[9], 'emfile-last')
  const givenBack = await refusedWithBytes(rigs[10])
  for (const r of rigs) r.destroy()
  console.log(JSON.stringify({ outcomes, last, held: givenBack }))
}

main().catch(err => {
  console.error(err)
  process.exit(1)
})
