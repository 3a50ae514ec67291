import dgram from 'node:dgram'
import { once } from 'node:events'
import { splice } from '../splice.js'
import { serve } from './bench-child.js'

// The UDP relay under test, in a process of its own (bench-child.ts).
// Started by bench-udp.ts with the case and the receiving peer's port.
// `node-relay` is what users write today: 'message' into send().

const [name, targetPort] = process.argv.slice(2)

async function relay (): Promise<number> {
  // The peers' socket buffers (bench/peer.c): 4 MiB, capped by the kernel.
  const buffers = { recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 }
  const source = dgram.createSocket({ type: 'udp4', ...buffers })
  const drain = dgram.createSocket({ type: 'udp4', ...buffers })
  source.bind(0, '127.0.0.1')
  await once(source, 'listening')
  drain.bind(0, '127.0.0.1')
  await once(drain, 'listening')
  await new Promise<void>(resolve => drain.connect(Number(targetPort), '127.0.0.1', resolve))
  for (const s of [source, drain]) s.on('error', () => {})
  if (name === 'node-relay') source.on('message', (m: Buffer) => drain.send(m))
  else splice(source, drain, { backend: name as 'pipe' | 'userspace' })
  return source.address().port
}

serve(relay())
