import { backends, proxy } from '../lib/index.js'
import { addonPath } from '../lib/native.js'
import { receive, send, socketPair } from './helpers.js'

// Run as a script by the install tests, in an installed copy (see
// tarball.ts's linkTests), under whichever Node they test: proxies
// `argv[2]` MiB each way on this host's best backend and prints, as JSON,
// what was sent and received (length + sha256) and how the proxy ended.

async function main (): Promise<void> {
  const size = Number(process.argv[2] ?? 16) * (1 << 20)
  const [client, a] = await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true })
  const [b, server] = await socketPair('127.0.0.1', '127.0.0.1', { allowHalfOpen: true })
  const backend = backends()[0]
  const proxied = proxy(a, b, { backend })
  const atServer = receive(server)
  const atClient = receive(client)
  const [up, down] = await Promise.all([send(client, 'up', size), send(server, 'down', size)])
  const report = {
    arch: process.arch,
    node: process.version,
    addon: addonPath ?? null,
    backends: backends(),
    backend,
    up: { sent: up, received: await atServer },
    down: { sent: down, received: await atClient },
    result: await proxied
  }
  for (const s of [client, a, b, server]) s.destroy()
  process.stdout.write(JSON.stringify(report) + '\n')
}

main().catch(err => {
  process.stderr.write(`${err.stack}\n`)
  process.exitCode = 1
})
