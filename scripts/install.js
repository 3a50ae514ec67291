#!/usr/bin/env node
'use strict'
// npm's install step: use a prebuild that loads here, else compile the
// addon. Neither may fail the install, because the userspace backend needs
// no addon: a failure is written to build/install-error.json (read by
// lib/native.ts, which warns at run time, and by `sosplice doctor`) and
// printed on stderr, which npm shows only with --foreground-scripts.
// Plain JavaScript: it runs before the TypeScript is compiled.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const record = path.join(root, 'build', 'install-error.json')
const kernelPlatforms = ['linux', 'freebsd', 'openbsd']

/** Why no addon loads here, or undefined when one does. */
function loadFailure () {
  try {
    require(require('node-gyp-build').path(root))
    return undefined
  } catch (err) {
    return err.message.split('\n')[0]
  }
}

/** node-gyp from this package's own dependencies, else the one npm puts on the PATH. */
function nodeGyp () {
  try {
    const pkg = require.resolve('node-gyp/package.json')
    return [process.execPath, [path.join(path.dirname(pkg), require(pkg).bin['node-gyp']), 'rebuild']]
  } catch {
    return ['node-gyp', ['rebuild']]
  }
}

/** The line that says what went wrong: a compiler's error or a missing tool, else make's, else node-gyp's. */
function firstError (output) {
  const lines = output.split('\n').map(line => line.trim()).filter(Boolean)
  const tools = lines.filter(line => !line.startsWith('gyp '))
  return tools.find(line => /\berror:|not found|No such file or directory/i.test(line)) ??
    tools.find(line => /\berror\b/i.test(line)) ?? lines.find(line => line.includes('ERR!')) ?? lines[0] ?? 'no output'
}

/** Why compiling gave no addon that loads, or undefined when it gave one. */
function compileFailure () {
  const [command, args] = nodeGyp()
  const run = spawnSync(command, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20 })
  if (run.error) return `${command}: ${run.error.message}`
  if (run.status !== 0) return firstError(`${run.stdout}\n${run.stderr}`)
  const failure = loadFailure()
  return failure && `compiled, but it did not load: ${failure}`
}

function main () {
  fs.rmSync(record, { force: true })
  const target = `${process.platform}-${process.arch}`
  if (!kernelPlatforms.includes(process.platform)) {
    console.error(`sosplice: ${process.platform} has no kernel socket splicing; the userspace backend will be used`)
    return
  }
  const fromSource = process.env.npm_config_build_from_source === 'true'
  const prebuild = fromSource ? 'not looked for (building from source was asked)' : loadFailure()
  if (prebuild === undefined) return
  const compile = compileFailure()
  if (compile === undefined) return
  fs.mkdirSync(path.dirname(record), { recursive: true })
  fs.writeFileSync(record, JSON.stringify({ target, node: process.version, prebuild, compile }, null, 2) + '\n')
  const line = '!'.repeat(72)
  console.error([line,
    `sosplice: WARNING: no native addon for ${target}.`,
    `  prebuild: ${prebuild}`,
    `  compile: ${compile}`,
    'Only the userspace backend will be available (no zero-copy splicing).',
    'Install a C++ compiler, make and python3, then `npm rebuild sosplice`;',
    '`npx sosplice doctor` tells which backends this host has.',
    line].join('\n'))
}

main()
