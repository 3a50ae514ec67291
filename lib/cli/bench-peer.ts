import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

// The bench's C load peers (bench/peer.c for TCP, bench/udp-peer.c), each
// compiled once per version of its source with the system's C compiler ($CC
// or cc) into the temp directory.

/** The peer's path, or why there is none. */
export function compilePeer (name: 'peer' | 'udp-peer' = 'peer'): { peer?: string, why?: string } {
  try {
    const source = path.join(__dirname, '..', '..', '..', 'bench', `${name}.c`)
    const text = fs.readFileSync(source)
    const peer = path.join(os.tmpdir(), `sosplice-${name}-${createHash('sha256').update(text).digest('hex').slice(0, 16)}`)
    if (fs.existsSync(peer)) return { peer }
    const building = `${peer}.${process.pid}`
    execFileSync(process.env.CC || 'cc', ['-O2', '-o', building, source], { stdio: ['ignore', 'ignore', 'pipe'] })
    fs.renameSync(building, peer)
    return { peer }
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim()
    return { why: stderr || (err as Error).message }
  }
}
