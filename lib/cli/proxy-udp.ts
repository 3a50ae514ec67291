import dgram from 'node:dgram'
import { once } from 'node:events'
import type { BackendName } from '../backends.js'
import { handleOf, receiving } from '../datagram.js'
import { native } from '../native.js'
import { proxy, type ProxyResult } from '../proxy.js'
import { hostPort } from './args.js'

// `sosplice proxy --udp`: a UDP relay of flows. The listening socket only
// meets a client's first datagrams: for each client address it opens a
// socket bound to the same address and port (SO_REUSEADDR) and connected to
// the client, which the kernel then prefers for that client's datagrams,
// and an upstream socket connected to the target; the two are spliced both
// ways until the flow has been idle. Until it was connected that socket
// could receive any client's datagrams: the addon takes those out (the
// "strays") to be sent on by their own flows before the splice starts.

export interface UdpProxyOptions {
  listen: { host: string, port: number }
  to: { host: string, port: number }
  max?: number
  /** ms without a datagram either way that end a flow. */
  idle: number
  backend: BackendName
}

function family (host: string): 'udp4' | 'udp6' {
  return host.includes(':') ? 'udp6' : 'udp4'
}

/** Runs until the listener is closed (signals) and its flows have ended; resolves to the exit code. */
export async function udpProxy (o: UdpProxyOptions): Promise<number> {
  if (!native) {
    process.stderr.write('sosplice proxy: --udp needs the native addon, which did not load (`npx sosplice doctor` says why)\n')
    return 1
  }
  const listener = dgram.createSocket({ type: family(o.listen.host), reuseAddr: true })
  listener.bind(o.listen.port, o.listen.host)
  try {
    await once(listener, 'listening')
  } catch (err) {
    const { code, message } = err as NodeJS.ErrnoException
    process.stderr.write(`sosplice proxy: cannot listen on ${hostPort(o.listen.host, o.listen.port)}: ${code} (${message})\n`)
    return 1
  }
  const bound = listener.address()
  const flows = new Map<string, Flow>()
  let closing = false
  let allEnded: () => void = () => {}
  const ended = () => { if (closing && flows.size === 0) allEnded() }
  listener.on('error', err => process.stderr.write(`sosplice proxy: ${err.message}\n`))
  // Also for what reaches a flow's own socket before it is connected, and
  // its strays: they may be another client's.
  const dispatch = (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    const key = hostPort(rinfo.address, rinfo.port)
    if (msg.length === 0 && Flow.lateMarkers.has(key)) return
    let flow = flows.get(key)
    if (!flow) {
      if (closing) return
      flow = new Flow(key, listener, rinfo, dispatch, o, line => {
        flows.delete(key)
        process.stdout.write(line)
        ended()
      })
      flows.set(key, flow)
    }
    flow.forward(msg)
  }
  listener.on('message', dispatch)
  process.stdout.write(`listening on udp ${hostPort(bound.address, bound.port)} -> ${hostPort(o.to.host, o.to.port)} (backend ${o.backend})\n`)

  let signals = 0
  const onSignal = (signal: NodeJS.Signals) => {
    if (signals++ === 0) {
      closing = true
      listener.close()
      process.stderr.write(`sosplice proxy: closing: waiting for ${flows.size} live flow(s) to be idle\n`)
      return ended()
    }
    process.stderr.write(`sosplice proxy: second ${signal}: ending ${flows.size} live flow(s) now\n`)
    for (const flow of flows.values()) flow.end('close')
  }
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal)
  await new Promise<void>(resolve => { allEnded = resolve })
  process.off('SIGINT', onSignal).off('SIGTERM', onSignal)
  return signals > 1 ? 1 : 0
}

class Flow {
  readonly #client: dgram.Socket
  readonly #upstream: dgram.Socket
  readonly #abort = new AbortController()
  #queued = 0 // sends of early datagrams not yet done
  #waiting: Buffer[] = [] // early datagrams for an upstream still connecting
  #upstreamReady = false
  #connected = 0
  #error?: Error // before the splice ran
  // What went by hand, up (client to upstream) and down, counted with the splice's.
  readonly #early = { up: { bytes: 0, datagrams: 0 }, down: { bytes: 0, datagrams: 0 } }
  #running = false
  #finished = false
  #why?: 'idle' | 'close'
  readonly #started = performance.now()

  constructor (readonly key: string, readonly listener: dgram.Socket, readonly rinfo: dgram.RemoteInfo,
    readonly dispatch: (msg: Buffer, rinfo: dgram.RemoteInfo) => void,
    readonly o: UdpProxyOptions, readonly log: (line: string) => void) {
    const bound = listener.address()
    this.#client = dgram.createSocket({ type: family(bound.address), reuseAddr: true })
    this.#upstream = dgram.createSocket(family(o.to.host))
    for (const s of [this.#client, this.#upstream]) s.on('error', this.#onError)
    // Until the splice runs, what reaches either socket is sent on by hand.
    this.#client.on('message', dispatch)
    this.#upstream.on('message', this.#back)
    this.#client.bind(bound.port, bound.address, () => this.#client.connect(rinfo.port, rinfo.address, this.#onClientConnect))
    this.#upstream.connect(o.to.port, o.to.host, () => {
      this.#upstreamReady = true
      for (const msg of this.#waiting.splice(0)) this.#sendEarly(msg)
      this.#onConnect()
    })
  }

  /**
   * A datagram from the client that did not come through the splice: one
   * before it, one still queued on the listener, or a stray.
   */
  forward = (msg: Buffer) => this.#sendEarly(msg)

  /** From the upstream before the splice: by the listener, which has the client socket's address. */
  #back = (msg: Buffer) => this.#sendEarly(msg, this.listener, this.rinfo)

  #sendEarly (msg: Buffer, via = this.#upstream, to?: dgram.RemoteInfo) {
    if (this.#finished) return
    // Node sends on a connected socket only once it has connected.
    if (!to && !this.#upstreamReady) {
      this.#waiting.push(msg)
      return
    }
    this.#queued++
    const count = this.#early[to ? 'down' : 'up']
    count.bytes += msg.length
    count.datagrams++
    const sent = () => {
      this.#queued--
      this.#start()
    }
    if (to) via.send(msg, to.port, to.address, sent)
    else via.send(msg, sent)
  }

  end (why: 'idle' | 'close') {
    this.#why ??= why
    if (this.#running) this.#abort.abort()
    else this.#finish()
  }

  // The client socket's strays (src/strays.h), with Node not receiving on
  // it meanwhile: the marker is not a datagram to relay. Done at once as a
  // rule; when the kernel has put off delivering the marker, looked at
  // again every millisecond, and after a second taken to have been dropped
  // (should it come later still, the listener gets it and drops it).
  #onClientConnect = (err?: Error) => {
    if (err) return this.#onError(err)
    const handle = handleOf(this.#client)!
    let back: Buffer
    try {
      receiving(handle, false)
      back = native!.sendMarker(handle.fd)
    } catch (err) {
      return this.#onError(err as Error)
    }
    const since = performance.now()
    const take = () => {
      if (this.#finished) return
      const force = performance.now() - since > 1000
      const { strays, done, error, marker } = native!.takeStrays(handle.fd, back, force)
      for (const { data, address, family, port } of strays) this.dispatch(data, { address, family, port, size: data.length })
      if (error) return this.#onError(error)
      if (!done) return setTimeout(take, 1)
      if (marker) Flow.lateMarker(hostPort(marker.address, marker.port))
      try {
        receiving(handle, true)
      } catch (err) {
        return this.#onError(err as Error)
      }
      this.#onConnect()
    }
    take()
  }

  /** Markers given up for: for a while, an empty datagram from one is no client's. */
  static readonly lateMarkers = new Set<string>()

  static lateMarker (key: string) {
    Flow.lateMarkers.add(key)
    setTimeout(() => Flow.lateMarkers.delete(key), 10_000).unref()
  }

  #onConnect = () => {
    this.#connected++
    this.#start()
  }

  // Once spliced, the relay has the sockets' errors.
  #onError = (err: Error) => {
    if (this.#running) return
    this.#error ??= err
    this.end('close')
  }

  /** Once both are connected and no early send is pending: the relay's sends must not overtake Node's. */
  #start () {
    if (this.#running || this.#why || this.#connected < 2 || this.#queued > 0) return
    this.#running = true
    this.#client.off('message', this.dispatch)
    this.#upstream.off('message', this.#back)
    let p: ReturnType<typeof proxy>
    try {
      p = proxy(this.#client, this.#upstream, { max: this.o.max, backend: this.o.backend, signal: this.#abort.signal })
    } catch (err) {
      process.stderr.write(`sosplice proxy: ${this.key}: ${(err as Error).message}\n`)
      return this.#finish()
    }
    // Idle: no datagram either way for `idle` ms, looked at four times as often.
    let last = -1
    let quiet = 0
    const every = Math.max(10, Math.min(1000, this.o.idle / 4))
    const timer = setInterval(() => {
      const now = p.bytes.aToB + p.bytes.bToA
      quiet = now === last ? quiet + every : 0
      last = now
      if (quiet >= this.o.idle) this.end('idle')
    }, every)
    p.then(result => {
      clearInterval(timer)
      this.#finish(result)
    })
  }

  #finish (result?: ProxyResult) {
    if (this.#finished) return
    this.#finished = true
    this.#client.close()
    this.#upstream.close()
    const seconds = ((performance.now() - this.#started) / 1000).toFixed(3)
    const side = (r: ProxyResult['aToB'] | undefined, early: { bytes: number, datagrams: number }) =>
      `${early.bytes + (r?.bytes ?? 0)} B in ${early.datagrams + (r?.datagrams ?? 0)} datagrams ` +
      `(${!r || r.reason === 'unsplice' ? this.#why : r.reason})`
    const error = result?.aToB.error ?? result?.bToA.error ?? this.#error
    const code = error ? ` error ${(error as NodeJS.ErrnoException).code ?? error.name}` : ''
    this.log(`${this.key} -> ${hostPort(this.o.to.host, this.o.to.port)} up ${side(result?.aToB, this.#early.up)} down ${side(result?.bToA, this.#early.down)} ${seconds} s${code}\n`)
  }
}
