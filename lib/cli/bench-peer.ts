import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'

// The bench's C load peers (bench/peer.c), compiled once per version of the
// source with the system's C compiler ($CC or cc) into the temp directory.

const source = path.join(__dirname, '..', '..', '..', 'bench', 'peer.c')

/** The peer's path, or why there is none. */
export function compilePeer (): { peer?: string, why?: string } {
  try {
    const text = fs.readFileSync(source)
    const peer = path.join(os.tmpdir(), `sosplice-peer-${createHash('sha256').update(text).digest('hex').slice(0, 16)}`)
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
