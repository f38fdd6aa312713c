// Node entry point (Node.js 20 and later): TCP with the token, or the Unix socket.
import { OpenCodeClient as Client } from './core.js'
import { nodePlatform } from './node.js'

/** See core.js; this one speaks TCP (with the token) and the Unix socket. */
export class OpenCodeClient extends Client {
  static platform = nodePlatform
}

export { OpenCodeError, ROUTES, SessionStream } from './core.js'
export { dataDir, readToken, resolve as resolveEndpoint, socketPath } from './node.js'
