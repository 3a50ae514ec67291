// The side every process under test in the bench shares (bench-proxy.ts,
// bench-udp-relay.ts): IPC with its parent, which measures its CPU time
// apart from the peers'. It sends {port} once ready; 'begin' starts the
// CPU count (answered with {}), 'end' answers {cpu} since 'begin'.
export function serve (ready: Promise<number>): void {
  let begun: NodeJS.CpuUsage | undefined
  process.on('message', message => {
    if (message === 'begin') {
      begun = process.cpuUsage()
      process.send!({})
    } else if (message === 'end') {
      process.send!({ cpu: process.cpuUsage(begun) })
    }
  })
  process.on('disconnect', () => process.exit(0))
  ready.then(port => process.send!({ port }))
}
