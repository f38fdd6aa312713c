// Browser entry point: fetch and the global WebSocket. A browser cannot reach the Unix socket
// and cannot set headers on a WebSocket, so the token goes as `?token=` on the stream routes
// (the daemon accepts it there only) and as a Bearer header everywhere else.
import { OpenCodeClient as Client, OpenCodeError } from './core.js'

function resolve(url, token) {
  const chosen = (url || '').trim()
  if (!/^https?:\/\//.test(chosen)) {
    throw new OpenCodeError('in a browser, pass the daemon URL (http:// or https://)', {
      code: 'CLIENT_ERROR',
    })
  }
  const base = chosen.replace(/\/+$/, '')
  return { base, display: base, token }
}

async function* readerChunks(body, signal) {
  const reader = body.getReader()
  try {
    while (true) {
      const { done, value } = await reader.read()
      if (done) return
      yield value
    }
  } catch (error) {
    if (signal?.aborted) throw signal.reason
    throw new OpenCodeError(`connection lost: ${error.message}`, {
      code: 'CONNECTION_LOST',
      cause: error,
    })
  } finally {
    reader.cancel().catch(() => {})
  }
}

async function request(endpoint, { method, path, headers, body, signal }) {
  const all = { ...headers }
  if (endpoint.token) all.Authorization = `Bearer ${endpoint.token}`
  let response
  try {
    response = await fetch(endpoint.base + path, { method, headers: all, body, signal })
  } catch (error) {
    if (signal?.aborted) throw signal.reason
    throw new OpenCodeError(`cannot reach opencoded at ${endpoint.display}: ${error.message}`, {
      code: 'CONNECT_ERROR',
      cause: error,
    })
  }
  const chunks = response.body ? readerChunks(response.body, signal) : (async function* () {})()
  return {
    status: response.status,
    header: (name) => response.headers.get(name),
    body: chunks,
    async text() {
      const decoder = new TextDecoder()
      let text = ''
      for await (const chunk of chunks) text += decoder.decode(chunk, { stream: true })
      return text + decoder.decode()
    },
  }
}

function websocket(endpoint, { path, signal }) {
  const url = new URL(endpoint.base + path)
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:'
  if (endpoint.token) url.searchParams.set('token', endpoint.token)
  return new Promise((resolvePromise, reject) => {
    const ws = new globalThis.WebSocket(url)
    const queue = []
    let waiting
    let closed
    const wake = () => {
      const w = waiting
      waiting = undefined
      w?.()
    }
    const onAbort = () => ws.close(1000)
    signal?.addEventListener('abort', onAbort, { once: true })
    ws.onmessage = (e) => {
      queue.push(typeof e.data === 'string' ? e.data : new TextDecoder().decode(e.data))
      wake()
    }
    ws.onclose = (e) => {
      closed = { code: e.code, reason: e.reason }
      signal?.removeEventListener('abort', onAbort)
      wake()
      // A browser does not show why a handshake failed: a close before open is a refusal.
      reject(new OpenCodeError(`WebSocket refused (${e.code})`, { code: 'CONNECT_ERROR' }))
    }
    ws.onopen = () =>
      resolvePromise({
        async *messages() {
          while (true) {
            if (queue.length) yield queue.shift()
            else if (closed) return
            else await new Promise((r) => (waiting = r))
          }
        },
        send: (text) => ws.send(text),
        close: (code = 1000) => ws.close(code),
        closeInfo: () => closed ?? { code: 1006, reason: '' },
      })
  })
}

/** See core.js; this one uses fetch and the global WebSocket. */
export class OpenCodeClient extends Client {
  static platform = { resolve, request, websocket }
}

export { OpenCodeError, ROUTES, SessionStream } from './core.js'
