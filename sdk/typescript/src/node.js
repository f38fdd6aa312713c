// Node's platform: endpoint rules of the contract (section 1), HTTP over TCP or the Unix
// socket through http.request, and the WebSocket client of ./ws.js.
import { readFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { homedir } from 'node:os'
import { join } from 'node:path'

import { OpenCodeError } from './core.js'
import { connectWebSocket } from './ws.js'

// Over the socket the host only goes into the Host header; the daemon accepts loopback names.
const SOCKET_HOST = 'localhost'

export function dataDir(env = process.env) {
  if (env.OPENCODE_DATA_DIR) return env.OPENCODE_DATA_DIR
  return join(env.XDG_DATA_HOME || join(homedir(), '.local', 'share'), 'opencode')
}

export function socketPath(env = process.env) {
  if (env.OPENCODE_SOCKET) return env.OPENCODE_SOCKET
  if (env.XDG_RUNTIME_DIR) return join(env.XDG_RUNTIME_DIR, 'opencode', 'opencoded.sock')
  return `/tmp/opencode-${process.getuid?.() ?? 0}/opencoded.sock`
}

/** `$OPENCODE_TOKEN`, else the data dir's `token` file, else undefined. */
export function readToken(env = process.env) {
  if (env.OPENCODE_TOKEN) return env.OPENCODE_TOKEN
  try {
    return readFileSync(join(dataDir(env), 'token'), 'utf8').trim() || undefined
  } catch {
    return undefined
  }
}

/** The endpoint: the argument, else `$OPENCODE_URL`, else the default socket. The token is
 * looked up for TCP only: the socket's file mode is its access control. */
export function resolve(url, token, env = process.env) {
  const chosen = (url || env.OPENCODE_URL || '').trim()
  if (!chosen) {
    const path = socketPath(env)
    return { socketPath: path, display: `unix://${path}`, default: true }
  }
  if (chosen.startsWith('unix:')) {
    let path = chosen.slice('unix:'.length)
    if (path.startsWith('//')) path = path.slice(2)
    if (!path.startsWith('/')) {
      throw new OpenCodeError(`unix URL needs an absolute path: ${chosen}`, { code: 'CLIENT_ERROR' })
    }
    return { socketPath: path, display: `unix://${path}` }
  }
  if (/^https?:\/\//.test(chosen)) {
    const base = new URL(chosen)
    const display = chosen.replace(/\/+$/, '')
    return { url: base, display, token: token || readToken(env) }
  }
  throw new OpenCodeError(
    `unsupported daemon URL ${chosen} (use http://, https:// or unix:///path)`,
    { code: 'CLIENT_ERROR' },
  )
}

/** http.request options for `path` on `endpoint`. */
export function requestOptions(endpoint, method, path, headers) {
  const all = { ...headers }
  if (endpoint.socketPath) {
    return { module: http, options: { socketPath: endpoint.socketPath, method, path, headers: { Host: SOCKET_HOST, ...all } } }
  }
  const url = endpoint.url
  if (endpoint.token) all.Authorization = `Bearer ${endpoint.token}`
  const prefix = url.pathname.replace(/\/+$/, '')
  return {
    module: url.protocol === 'https:' ? https : http,
    options: {
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || undefined,
      method,
      path: prefix + path,
      headers: all,
    },
  }
}

function transportError(error, endpoint, what) {
  if (error instanceof OpenCodeError) return error
  const connecting = ['ECONNREFUSED', 'ENOENT', 'EHOSTUNREACH', 'ENOTFOUND', 'EACCES'].includes(
    error?.code,
  )
  return new OpenCodeError(
    connecting
      ? `cannot reach opencoded at ${endpoint.display}: ${error.message}`
      : `${what}: ${error?.message ?? error}`,
    { code: connecting ? 'CONNECT_ERROR' : 'CONNECTION_LOST', cause: error },
  )
}

/** Body chunks; a connection that drops mid-body is CONNECTION_LOST, an abort the signal's
 * reason. Leaving the loop early destroys the response. */
async function* bodyChunks(res, endpoint, what, signal) {
  let complete = false
  res.once('end', () => (complete = true))
  try {
    for await (const chunk of res) yield chunk
  } catch (error) {
    if (signal?.aborted) throw signal.reason
    throw transportError(error, endpoint, what)
  }
  // Node ends (rather than errors) some responses cut short: a chunked body without its end.
  if (!complete || !res.complete) {
    if (signal?.aborted) throw signal.reason
    throw new OpenCodeError(`${what}: connection closed before the answer ended`, {
      code: 'CONNECTION_LOST',
    })
  }
}

export function request(endpoint, { method, path, headers, body, signal }) {
  const what = `${method} ${path}`
  signal?.throwIfAborted()
  const { module, options } = requestOptions(endpoint, method, path, headers)
  if (body !== undefined) options.headers['Content-Length'] = Buffer.byteLength(body)
  return new Promise((resolvePromise, reject) => {
    const req = module.request({ ...options, signal })
    req.once('error', (error) => {
      reject(signal?.aborted ? signal.reason : transportError(error, endpoint, what))
    })
    req.once('response', (res) => {
      const chunks = bodyChunks(res, endpoint, what, signal)
      resolvePromise({
        status: res.statusCode,
        header: (name) => {
          const value = res.headers[name.toLowerCase()]
          return Array.isArray(value) ? value.join(', ') : (value ?? null)
        },
        body: chunks,
        async text() {
          const parts = []
          for await (const chunk of chunks) parts.push(chunk)
          return Buffer.concat(parts).toString('utf8')
        },
      })
    })
    req.end(body)
  })
}

export function websocket(endpoint, { path, signal }) {
  const { module, options } = requestOptions(endpoint, 'GET', path, {})
  return connectWebSocket(module, options, { signal, display: endpoint.display }).catch(
    (error) => {
      throw signal?.aborted ? signal.reason : transportError(error, endpoint, `WebSocket ${path}`)
    },
  )
}

export const nodePlatform = { resolve, request, websocket }
