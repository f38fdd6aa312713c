// Browser entry point: fetch and the global WebSocket. A browser cannot reach the Unix socket
// and cannot set headers on a WebSocket, so the token goes as `?token=` on the stream routes
// (the daemon accepts it there only) and as a Bearer header everywhere else.
import { OpenCodeClient as Client, errorFromBody, OpenCodeError } from './core.js'

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
    let opened = false
    let failing = false
    const fail = () => {
      if (opened || failing) return
      failing = true
      refused(endpoint, path, signal).then(reject, reject)
    }
    const end = (code, reason) => {
      closed ??= { code, reason }
      signal?.removeEventListener('abort', onAbort)
      wake()
      fail()
    }
    ws.onclose = (e) => end(e.code, e.reason)
    // Some implementations (Node 20's) report a refused handshake or a drop with `error` only.
    ws.onerror = () => end(1006, '')
    ws.onopen = () => {
      opened = true
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
        isClosed: () => closed !== undefined,
      })
    }
  })
}

/** Why a handshake failed: a browser does not show the answer, so ask the session itself. An
 * API error (unknown session, bad token) is final; otherwise the daemon was unreachable. */
async function refused(endpoint, path, signal) {
  const sessionPath = path.replace(/\/stream(\?.*)?$/, '')
  try {
    const response = await request(endpoint, {
      method: 'GET',
      path: sessionPath,
      headers: { Accept: 'application/json' },
      signal,
    })
    const text = await response.text()
    if (response.status >= 400) return errorFromBody(response.status, text)
  } catch (error) {
    if (signal?.aborted) return signal.reason
  }
  return new OpenCodeError('WebSocket connection failed', { code: 'CONNECT_ERROR' })
}

/** See core.js; this one uses fetch and the global WebSocket. */
export class OpenCodeClient extends Client {
  static platform = { resolve, request, websocket }
}

export { OpenCodeError, ROUTES, SessionStream } from './core.js'
