// The ESM entry (`import ... from 'sosplice'`): the CommonJS build, re-exported,
// so that both module systems share one copy of the engine's state.
export * from './index.js'
