import assert from 'node:assert/strict'
import fs from 'node:fs'
import { splice } from '../lib/index.js'
import { Flag, native, type NativeHandle, Reason } from '../lib/native.js'
import { eventually, receive, rig, send, within } from './helpers.js'

// Run by blocking.test.ts with a TCP socket as its stdin (the source) and
// another as its stdout (the drain): libuv makes descriptors 0 to 2 blocking
// in a child, and this one never wraps them (no console.log: stderr only).
// Splices 0 into 1 with the addon: FIRST bytes then an idle end, then SECOND
// bytes (asked for by printing "more") then an unsplice; reports on its last
// line.

const FIRST = 256 * 1024
const SECOND = 64 * 1024
const addon = native!

function blocking (fd: number): boolean {
  const flags = /flags:\s+([0-7]+)/.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'))![1]
  return (parseInt(flags, 8) & 0o4000) === 0
}

function start (idle: number) {
  let handle!: NativeHandle
  const end = new Promise<{ bytes: number, reason: Reason }>(resolve => {
    handle = addon.start(0, 1, 0, 0, idle, Flag.Flow0, (_, bytes, reason) => resolve({ bytes, reason }))
  })
  addon.run(handle)
  return { handle, end }
}

async function main () {
  const before = [blocking(0), blocking(1)]
  // The first part: moved, then idle ends it.
  const first = start(2000)
  let ended = false
  first.end.then(() => { ended = true })
  assert.ok(await eventually(() => addon.bytes(first.handle, 0) === FIRST, 5000), 'the first part')
  // Meanwhile splices of other sockets move their bytes, some on the same worker.
  const rigs = await Promise.all([1, 2, 3, 4].map(() => rig()))
  const others = await within(Promise.all(rigs.map(async (r, i) => {
    const received = receive(r.receiver)
    const sp = splice(r.source, r.drain, { backend: 'pipe' })
    const sent = await send(r.sender, `other-${i}`, 1 << 20)
    assert.deepEqual(await sp.done, { bytes: 1 << 20, reason: 'eof' })
    assert.deepEqual(await received, sent)
  })), 5000, 'the other splices')
  const othersWhileIdle = !ended
  for (const r of rigs) r.destroy()
  const idle = await within(first.end, 5000, 'the idle end')
  // The second part: moved, then unspliced.
  const second = start(0)
  console.error('more')
  assert.ok(await eventually(() => addon.bytes(second.handle, 0) === SECOND, 5000), 'the second part')
  addon.stop(second.handle, Reason.Unsplice)
  const unsplice = await within(second.end, 5000, 'the unsplice')
  console.error(JSON.stringify({ before, idle, others: others.length, othersWhileIdle, unsplice, after: [blocking(0), blocking(1)] }))
}

main().catch(err => {
  console.error(JSON.stringify({ failed: String(err) }))
  process.exit(1)
})
