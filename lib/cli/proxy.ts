import { once } from 'node:events'
import net from 'node:net'
import { finished } from 'node:stream'
import { connectProxy } from '../../examples/connect-proxy.js'
import { proxyHeader } from '../../examples/proxy-protocol.js'
import { udpProxy } from './proxy-udp.js'
import { type BackendName, backends } from '../backends.js'
import { fail, hostPort, parseAddress, parseOptions, parseSize, parseWhole } from './args.js'
import { maxIdle } from '../options.js'
import { proxy } from '../proxy.js'
import type { SpliceOptions } from '../splice.js'

export const usage = `Usage: sosplice proxy --listen [HOST:]PORT (--to HOST:PORT | --connect) [options]
       sosplice proxy --udp --listen [HOST:]PORT --to HOST:PORT [--idle MS] [--max BYTES] [--backend NAME]

Accepts TCP connections on --listen and splices each one, both ways, to a
new connection to --to. The listening HOST defaults to 127.0.0.1 (loopback
only; give 0.0.0.0 or [::] for every interface); PORT 0 lets the system pick.

Options:
  --listen [HOST:]PORT  where to accept connections (required)
  --to HOST:PORT        where to connect each of them
  --connect             instead of --to: be an HTTP proxy for CONNECT tunnels
                        (curl -p -x, browsers): connect where each request
                        asks, answer 200, then splice (examples/connect-proxy.ts)
  --proxy-protocol v1|v2  with --to: send a PROXY protocol header (HAProxy's,
                        v1 text or v2 binary) with the client's address first
                        (examples/proxy-protocol.ts)
  --udp                 relay UDP flows: a flow per client address, its own
                        socket connected to the client and one to --to,
                        spliced both ways; --idle ends it (default 30000);
                        needs the native addon
  --max BYTES           end each direction after this many bytes (K, M, G suffixes;
                        with --udp never splitting a datagram)
  --idle MS             end a direction after MS milliseconds without a byte
                        (with --udp: a flow, without a datagram either way)
  --backend NAME        auto (default: ${backends()[0]}) or one of ${backends().join(', ')}
  --splice-after BYTES  copy the first BYTES of each direction in JavaScript, then
                        splice: short connections never pay for a kernel splice
  -h, --help            this text

Output, on stdout: once listening, with the port actually bound,
  listening on HOST:PORT -> HOST:PORT (backend NAME)
then a line per connection once it has ended:
  CLIENT -> TO up BYTES B (REASON) down BYTES B (REASON) SECONDS s[ error WHERE CODE]...
up is client to upstream, down the reverse; REASON is eof, max, idle, error
or close; an error is the client's or the upstream's (WHERE) or, when the
splice saw it, the direction's (up or down): "error upstream ECONNREFUSED".
With --connect, TO is the host:port asked for, and a tunnel whose upstream
cannot be reached is answered 502 and logged as
  CLIENT -> TO refused (502) error upstream CODE
With --udp, once a flow has ended:
  CLIENT -> TO up BYTES B in N datagrams (REASON) down BYTES B in N datagrams (REASON) SECONDS s[ error CODE]

Signals: a first SIGINT or SIGTERM closes the listener and lets the live
connections finish, then exits 0; a second one closes them at once, exit 1.
Exit codes: 1 also when it cannot listen, 2 for bad arguments.
`

/** Splices one connection both ways to its end; resolves with its log line. */
async function relay (client: net.Socket, upstream: net.Socket, to: string, options: SpliceOptions): Promise<string> {
  const start = performance.now()
  const from = hostPort(client.remoteAddress, client.remotePort)
  // Which socket an error came from: an upstream that cannot connect ends
  // both directions with its error. Errors the splice saw itself are neither.
  const sides = new Map<Error, string>()
  client.on('error', err => sides.set(err, 'client'))
  upstream.on('error', err => sides.set(err, 'upstream'))
  const { aToB, bToA } = await proxy(client, upstream, options)
  // The splices count bytes still queued in Node as moved: let them out, then
  // a FIN, before closing (a peer that stopped reading gets --idle ms).
  await Promise.all([client, upstream].map(socket => new Promise<void>(resolve => {
    finished(socket.end(), { readable: false }, () => resolve())
    if (options.idle) setTimeout(resolve, options.idle).unref()
  })))
  client.destroy()
  upstream.destroy()
  const errors = new Set<string>()
  for (const [direction, { error }] of [['up', aToB], ['down', bToA]] as const) {
    if (error) errors.add(` error ${sides.get(error) ?? direction} ${(error as NodeJS.ErrnoException).code ?? error.name}`)
  }
  const seconds = ((performance.now() - start) / 1000).toFixed(3)
  return `${from} -> ${to} up ${aToB.bytes} B (${aToB.reason}) down ${bToA.bytes} B (${bToA.reason}) ${seconds} s${[...errors].join('')}\n`
}

export async function main (args: string[]): Promise<number> {
  const { values } = parseOptions(args, {
    listen: { type: 'string' },
    to: { type: 'string' },
    connect: { type: 'boolean' },
    udp: { type: 'boolean' },
    'proxy-protocol': { type: 'string' },
    max: { type: 'string' },
    idle: { type: 'string' },
    backend: { type: 'string', default: 'auto' },
    'splice-after': { type: 'string' }
  })
  if (values.listen === undefined) fail('--listen [HOST:]PORT is required')
  if (values.to === undefined && !values.connect) fail('--to HOST:PORT or --connect is required')
  if (values.to !== undefined && values.connect) fail('--to and --connect: give one, not both')
  const listen = parseAddress('--listen', values.listen, false)
  const to = values.to === undefined ? undefined : parseAddress('--to', values.to, true)
  if (to?.port === 0) fail('--to: port 0 is out of range 1-65535')
  const header = values['proxy-protocol']
  if (header !== undefined && header !== 'v1' && header !== 'v2') fail(`--proxy-protocol: v1 or v2, not ${header}`)
  if (header !== undefined && !to) fail('--proxy-protocol goes with --to')
  if (values.udp) {
    if (!to) fail('--udp goes with --to, not --connect')
    if (header !== undefined || values['splice-after'] !== undefined) fail('--udp: --proxy-protocol and --splice-after are for TCP')
  }
  const available: string[] = backends()
  if (values.backend !== 'auto' && !available.includes(values.backend)) {
    fail(`--backend: ${values.backend} is not one of auto, ${available.join(', ')}`)
  }
  const backend = (values.backend === 'auto' ? available[0] : values.backend) as BackendName
  const options: SpliceOptions = {
    max: values.max === undefined ? undefined : parseSize('--max', values.max),
    idle: values.idle === undefined ? undefined : parseWhole('--idle', values.idle, 1, maxIdle),
    spliceAfter: values['splice-after'] === undefined ? undefined : parseSize('--splice-after', values['splice-after'], 0),
    backend
  }

  if (values.udp) {
    return udpProxy({
      listen: { host: listen.host ?? '127.0.0.1', port: listen.port },
      to: to as { host: string, port: number },
      max: options.max,
      idle: options.idle ?? 30_000,
      backend
    })
  }

  const target = to ? hostPort(to.host, to.port) : 'CONNECT'
  const live = new Map<net.Socket, net.Socket>()
  const tunnel = (client: net.Socket, upstream: net.Socket, target: string) => {
    live.set(client, upstream)
    relay(client, upstream, target, options).then(line => {
      live.delete(client)
      process.stdout.write(line)
    })
  }
  let server: net.Server
  if (to) {
    server = net.createServer({ allowHalfOpen: true }, client => {
      // Reset before it could be looked at: no address for a header.
      if (header && client.remoteAddress === undefined) return client.destroy()
      const upstream = net.connect({ host: to.host, port: to.port, allowHalfOpen: true })
      if (header) upstream.write(proxyHeader(client, header === 'v1' ? 1 : 2))
      tunnel(client, upstream, target)
    })
  } else {
    server = connectProxy(tunnel, (client, target, err) => process.stdout.write(
      `${hostPort(client.remoteAddress, client.remotePort)} -> ${target} refused (502) error upstream ${(err as NodeJS.ErrnoException).code ?? err.name}\n`))
  }
  const host = listen.host ?? '127.0.0.1'
  server.listen(listen.port, host)
  try {
    await once(server, 'listening')
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException
    process.stderr.write(`sosplice proxy: cannot listen on ${hostPort(host, listen.port)}: ${code} (${message})\n`)
    return 1
  }
  // Accept errors (EMFILE...) cost one connection, not the others.
  server.on('error', err => process.stderr.write(`sosplice proxy: ${err.message}\n`))
  const bound = server.address() as net.AddressInfo
  process.stdout.write(`listening on ${hostPort(bound.address, bound.port)} -> ${target} (backend ${backend})\n`)

  let signals = 0
  const onSignal = (signal: NodeJS.Signals) => {
    if (signals++ === 0) {
      server.close()
      process.stderr.write(`sosplice proxy: closing: waiting for ${live.size} live connection(s)\n`)
      return
    }
    process.stderr.write(`sosplice proxy: second ${signal}: closing ${live.size} live connection(s) now\n`)
    for (const [client, upstream] of live) {
      client.destroy()
      upstream.destroy()
    }
  }
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal)
  // 'close' comes once the listener and every connection are closed.
  await once(server, 'close')
  process.off('SIGINT', onSignal).off('SIGTERM', onSignal)
  const code = signals > 1 ? 1 : 0
  // Nothing should hold the event loop any more: if something does, say so
  // and exit rather than hang.
  setTimeout(() => {
    process.stderr.write('sosplice proxy: something still holds the event loop; exiting\n')
    process.exit(code)
  }, 1000).unref()
  return code
}
