#!/usr/bin/env node
import { UsageError } from './args.js'

// `sosplice <command>`: each command lives in its own module and exports
// its usage text and a main(args) that resolves to the exit code.

interface Command {
  usage: string
  main (args: string[]): Promise<number>
}

const commands: Record<string, () => Command> = {
  bench: () => require('./bench.js'),
  proxy: () => require('./proxy.js'),
  doctor: () => require('./doctor.js')
}

const usage = `Usage: sosplice <command> [options]

Commands:
  bench    kernel vs userspace splicing vs Node's pipe(), side by side
  proxy    a TCP proxy that splices every connection
  doctor   which backends this host has, and why any is missing

sosplice <command> --help tells more.
`

async function main (argv: string[]): Promise<number> {
  const [name, ...args] = argv
  if (name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(usage)
    return 0
  }
  const load = Object.hasOwn(commands, name) ? commands[name] : undefined
  if (!load) {
    process.stderr.write(`sosplice: ${name === undefined ? 'no command given' : `unknown command: ${name}`}\n\n${usage}`)
    return 2
  }
  const command = load()
  if (args.includes('-h') || args.includes('--help')) {
    process.stdout.write(command.usage)
    return 0
  }
  try {
    return await command.main(args)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`sosplice ${name}: ${err.message}\n\n${command.usage}`)
    return 2
  }
}

main(process.argv.slice(2)).then(code => { process.exitCode = code }, err => {
  process.stderr.write(`sosplice: ${err.stack ?? err}\n`)
  process.exitCode = 1
})
