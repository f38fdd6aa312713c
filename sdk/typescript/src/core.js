// The client itself, free of any platform API: the Node and browser entry points hand it a
// "platform" (how to resolve the endpoint, make an HTTP request, open a WebSocket).

/** Every route the SDK calls: method, path, query parameters, body fields and the index.d.ts
 * interface of the body. A test compares this table with the daemon's /openapi.json, so a route
 * change that forgets the SDK fails. */
export const ROUTES = Object.freeze({
  health: { method: 'GET', path: '/health' },
  openapi: { method: 'GET', path: '/openapi.json' },
  'sessions.create': {
    method: 'POST',
    path: '/sessions',
    body: ['provider', 'model', 'project', 'directory', 'title', 'permission'],
    type: 'SessionCreate',
  },
  'sessions.list': { method: 'GET', path: '/sessions', query: ['limit', 'before', 'project'] },
  'sessions.get': { method: 'GET', path: '/sessions/{session_id}' },
  'sessions.delete': { method: 'DELETE', path: '/sessions/{session_id}' },
  'sessions.prune': {
    method: 'POST',
    path: '/sessions/prune',
    body: ['older_than_days'],
    type: 'PruneRequest',
  },
  'sessions.message': {
    method: 'POST',
    path: '/sessions/{session_id}/messages',
    body: ['parts', 'async', 'queue'],
    type: 'MessageCreate',
  },
  'sessions.messages': { method: 'GET', path: '/sessions/{session_id}/messages' },
  'sessions.abort': { method: 'POST', path: '/sessions/{session_id}/abort' },
  'sessions.events': { method: 'GET', path: '/sessions/{session_id}/events', query: ['after'] },
  'sessions.stream': { method: 'GET', path: '/sessions/{session_id}/stream', query: ['after'] },
  'permissions.list': { method: 'GET', path: '/sessions/{session_id}/permissions' },
  'permissions.answer': {
    method: 'POST',
    path: '/sessions/{session_id}/permissions/{permission_id}',
    body: ['response'],
    type: 'PermissionAnswer',
  },
  events: { method: 'GET', path: '/events' },
  providers: { method: 'GET', path: '/providers' },
  models: { method: 'GET', path: '/models' },
  'projects.list': { method: 'GET', path: '/projects' },
  'projects.create': {
    method: 'POST',
    path: '/projects',
    body: ['name', 'path'],
    type: 'ProjectCreate',
  },
  'projects.get': { method: 'GET', path: '/projects/{project_id}' },
  'projects.delete': { method: 'DELETE', path: '/projects/{project_id}' },
  'files.list': { method: 'GET', path: '/projects/{project_id}/files', query: ['path'] },
  'files.read': { method: 'GET', path: '/projects/{project_id}/files/content', query: ['path'] },
  // The contract's second round (section 8): compaction, changes, fork, todo, MCP, metrics.
  'sessions.compact': { method: 'POST', path: '/sessions/{session_id}/compact' },
  'sessions.diff': { method: 'GET', path: '/sessions/{session_id}/diff', query: ['turn'] },
  'sessions.revert': {
    method: 'POST',
    path: '/sessions/{session_id}/revert',
    body: ['message_id'],
    type: 'RevertRequest',
  },
  'sessions.unrevert': { method: 'POST', path: '/sessions/{session_id}/unrevert' },
  'sessions.fork': {
    method: 'POST',
    path: '/sessions/{session_id}/fork',
    body: ['message_id'],
    type: 'ForkRequest',
  },
  'sessions.todo': { method: 'GET', path: '/sessions/{session_id}/todo' },
  'sessions.cancelQueued': {
    method: 'DELETE',
    path: '/sessions/{session_id}/queue/{queue_id}',
  },
  'mcp.list': { method: 'GET', path: '/mcp' },
  'mcp.restart': { method: 'POST', path: '/mcp/{name}/restart' },
  metrics: { method: 'GET', path: '/metrics' },
})

const BY_STATUS = {
  400: 'INVALID_REQUEST',
  401: 'UNAUTHORIZED',
  403: 'PERMISSION_DENIED',
  404: 'NOT_FOUND',
  409: 'SESSION_BUSY',
  413: 'PAYLOAD_TOO_LARGE',
  429: 'RATE_LIMITED',
  502: 'PROVIDER_ERROR',
  503: 'UNAVAILABLE',
}

/** The one error class: the API's `code`, `message` and `details`, plus the HTTP `status` when
 * the daemon answered. Client-side failures use CONNECT_ERROR (daemon unreachable),
 * CONNECTION_LOST (dropped mid-stream) and PROTOCOL_ERROR (an answer this client cannot read). */
export class OpenCodeError extends Error {
  constructor(message, { code = 'CLIENT_ERROR', details = {}, status, cause } = {}) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'OpenCodeError'
    this.code = code
    this.details = details
    this.status = status
  }
}

const RETRYABLE = new Set(['CONNECT_ERROR', 'CONNECTION_LOST', 'UNAVAILABLE'])

export function errorFromBody(status, text, retryAfter) {
  let code = BY_STATUS[status] ?? 'INTERNAL_ERROR'
  let message = `HTTP ${status}`
  let details = {}
  let doc
  try {
    doc = JSON.parse(text)
  } catch {
    doc = undefined
  }
  const err = doc && typeof doc === 'object' ? doc.error : undefined
  if (err && typeof err === 'object') {
    code = String(err.code || code)
    message = String(err.message || message)
    if (err.details && typeof err.details === 'object') details = err.details
  } else if (text.trim()) {
    message = text.trim().slice(0, 500)
  }
  const error = new OpenCodeError(message, { code, details, status })
  if (retryAfter != null && !Number.isNaN(Number(retryAfter))) error.retryAfter = Number(retryAfter)
  return error
}

// ---- wire formats ---------------------------------------------------------------------------

/** Lines of a byte stream, as they arrive (a trailing line without newline comes last). */
export async function* lines(body) {
  const decoder = new TextDecoder()
  let buffer = ''
  for await (const chunk of body) {
    buffer += typeof chunk === 'string' ? chunk : decoder.decode(chunk, { stream: true })
    let at
    while ((at = buffer.indexOf('\n')) >= 0) {
      yield buffer.slice(0, at).replace(/\r$/, '')
      buffer = buffer.slice(at + 1)
    }
  }
  buffer += decoder.decode()
  if (buffer) yield buffer
}

/** One NDJSON line `{"type", "seq", "data"}` as an event; blank lines give undefined. */
export function parseNdjson(line) {
  if (!line.trim()) return undefined
  let doc
  try {
    doc = JSON.parse(line)
  } catch {
    throw new OpenCodeError(`bad NDJSON line from daemon: ${line.slice(0, 200)}`, {
      code: 'PROTOCOL_ERROR',
    })
  }
  if (!doc || typeof doc.type !== 'string') {
    throw new OpenCodeError(`NDJSON line without a type: ${line.slice(0, 200)}`, {
      code: 'PROTOCOL_ERROR',
    })
  }
  return event(doc.type, doc.seq, doc.data)
}

function event(type, seq, data) {
  return {
    type,
    seq: Number.isInteger(seq) ? seq : undefined,
    data: data && typeof data === 'object' ? data : {},
  }
}

/** Server-Sent Events as `{type, seq, data}`; `retry:` is reported through `onRetry`. */
export async function* parseSse(lineSource, onRetry = () => {}) {
  let id
  let type
  let data = []
  for await (const line of lineSource) {
    if (line === '') {
      if (data.length) {
        const raw = data.join('\n')
        let parsed
        try {
          parsed = JSON.parse(raw)
        } catch {
          throw new OpenCodeError(`bad SSE data from daemon: ${raw.slice(0, 200)}`, {
            code: 'PROTOCOL_ERROR',
          })
        }
        yield event(type || 'message', /^\d+$/.test(id ?? '') ? Number(id) : undefined, parsed)
      }
      type = undefined
      data = []
      continue
    }
    if (line.startsWith(':')) continue
    const colon = line.indexOf(':')
    const field = colon < 0 ? line : line.slice(0, colon)
    let value = colon < 0 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    if (field === 'id') id = value
    else if (field === 'event') type = value
    else if (field === 'data') data.push(value)
    else if (field === 'retry' && /^\d+$/.test(value)) onRetry(Number(value))
  }
}

/** A WebSocket frame: events are flat `{type, seq, ...data}`; control answers have no seq. */
export function parseWsFrame(text) {
  let doc
  try {
    doc = JSON.parse(text)
  } catch {
    throw new OpenCodeError(`bad WebSocket frame from daemon: ${String(text).slice(0, 200)}`, {
      code: 'PROTOCOL_ERROR',
    })
  }
  const { type, seq, ...data } = doc ?? {}
  return event(String(type), seq, data)
}

// ---- helpers ------------------------------------------------------------------------------

function fillPath(path, params = {}) {
  return path.replace(/\{(\w+)\}/g, (_, name) => {
    const value = params[name]
    if (value === undefined || value === null || value === '') {
      throw new TypeError(`${name} is required`)
    }
    return encodeURIComponent(String(value))
  })
}

function queryString(query = {}) {
  const search = new URLSearchParams()
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null) search.set(key, String(value))
  }
  const text = search.toString()
  return text ? `?${text}` : ''
}

function pick(options, names) {
  const out = {}
  for (const name of names) if (options[name] !== undefined) out[name] = options[name]
  return out
}

export function textParts({ text, parts } = {}) {
  if ((text === undefined) === (parts === undefined)) {
    throw new TypeError('give exactly one of text or parts')
  }
  return text !== undefined ? [{ type: 'text', text }] : parts.map((p) => ({ ...p }))
}

function abortError(signal) {
  return signal.reason ?? new DOMException('This operation was aborted', 'AbortError')
}

/** Wait `ms`, or throw when `signal` aborts first. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal))
    const onAbort = () => {
      clearTimeout(timer)
      reject(abortError(signal))
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

function retryable(error) {
  return error instanceof OpenCodeError && RETRYABLE.has(error.code)
}

// ---- the client ---------------------------------------------------------------------------

/** The client; each entry point (Node, browser) makes a subclass that sets `platform`. */
export class OpenCodeClient {
  /**
   * @param url `http://…`, `https://…` or (Node) `unix:///path`; default `$OPENCODE_URL`, else
   *   the default socket (Node). Browsers must pass a URL.
   * @param options `token` (default `$OPENCODE_TOKEN`, else the data dir's token file; only
   *   sent over TCP), `reconnectTimeout` (ms a stream keeps trying to reconnect, default 30000)
   */
  constructor(url, options = {}) {
    if (url && typeof url === 'object') {
      options = url
      url = options.url
    }
    this.options = { reconnectTimeout: 30000, ...options }
    this._platform = new.target.platform
    if (!this._platform) throw new TypeError('import OpenCodeClient from @opencode/client')
    this._endpoint = this._platform.resolve(url, options.token)
    this.sessions = new Sessions(this)
    this.permissions = new Permissions(this)
    this.projects = new Projects(this)
    this.files = new Files(this)
    this.mcp = new Mcp(this)
  }

  /** Where this client talks to: `unix:///path` or the base URL. */
  get url() {
    return this._endpoint.display
  }

  /** Open a request and return the response with its status checked; the body is unread. */
  async _open(name, { params, query, body, signal, accept = 'application/json' } = {}) {
    const route = ROUTES[name]
    signal?.throwIfAborted()
    const headers = { Accept: accept }
    let payload
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json'
      payload = JSON.stringify(body)
    }
    const path = fillPath(route.path, params) + queryString(query)
    const response = await this._platform.request(this._endpoint, {
      method: route.method,
      path,
      headers,
      body: payload,
      signal,
    })
    if (response.status >= 400) {
      const text = await response.text()
      throw errorFromBody(response.status, text, response.header('retry-after'))
    }
    return response
  }

  async _json(name, options) {
    const response = await this._open(name, options)
    const text = await response.text()
    if (!text.trim()) return undefined
    try {
      return JSON.parse(text)
    } catch {
      throw new OpenCodeError(`${ROUTES[name].method} ${ROUTES[name].path}: answer is not JSON`, {
        code: 'PROTOCOL_ERROR',
        status: response.status,
      })
    }
  }

  async _text(name, options) {
    const response = await this._open(name, { ...options, accept: 'text/plain' })
    return response.text()
  }

  health({ signal } = {}) {
    return this._json('health', { signal })
  }

  openapi({ signal } = {}) {
    return this._json('openapi', { signal })
  }

  providers({ signal } = {}) {
    return this._json('providers', { signal })
  }

  models({ signal } = {}) {
    return this._json('models', { signal })
  }

  /** `GET /metrics`: Prometheus text. */
  metrics({ signal } = {}) {
    return this._text('metrics', { signal })
  }

  /** `GET /events`: session-level notices (`session.created`, `session.deleted`,
   * `session.status`) as they happen; reconnects after a drop. `onOpen` is called each time a
   * connection is established: notices from then on are delivered. */
  async *events({ signal, onOpen } = {}) {
    yield* this._sse('events', {}, { signal, onOpen, resume: false })
  }

  /** Follow an SSE route; on a drop reconnect with `after` = the last seq seen. */
  async *_sse(name, params, { after, signal, onOpen, untilComplete = false, resume = true }) {
    let last = after
    let failingSince
    let delay = 100
    while (true) {
      let retryMs
      try {
        const response = await this._open(name, {
          params,
          query: resume ? { after: last } : {},
          signal,
          accept: 'text/event-stream',
        })
        failingSince = undefined
        delay = 100
        onOpen?.()
        for await (const ev of parseSse(lines(response.body), (ms) => (retryMs = ms))) {
          if (resume && ev.seq !== undefined) {
            if (last !== undefined && ev.seq <= last) continue
            last = ev.seq
          }
          yield ev
          if (untilComplete && ev.type === 'complete') return
        }
      } catch (error) {
        if (signal?.aborted) throw abortError(signal)
        if (!retryable(error)) throw error
        const now = Date.now()
        failingSince ??= now
        if (now - failingSince > this.options.reconnectTimeout) throw error
      }
      if (retryMs !== undefined) delay = retryMs
      await sleep(delay, signal)
      delay = Math.min(delay * 2, 2000)
    }
  }
}

class Resource {
  constructor(client) {
    this._client = client
  }
}

class Sessions extends Resource {
  /** `POST /sessions`: `{provider, model, project, directory, title, permission}`, all optional. */
  create(options = {}) {
    const body = pick(options, ROUTES['sessions.create'].body)
    return this._client._json('sessions.create', { body, signal: options.signal })
  }

  /** One page, newest first; pass the last id as `before` for the next page. */
  list(options = {}) {
    const query = pick(options, ROUTES['sessions.list'].query)
    return this._client._json('sessions.list', { query, signal: options.signal })
  }

  get(sessionId, { signal } = {}) {
    return this._client._json('sessions.get', { params: { session_id: sessionId }, signal })
  }

  async delete(sessionId, { signal } = {}) {
    await this._client._json('sessions.delete', { params: { session_id: sessionId }, signal })
  }

  /** `POST /sessions/prune`: remove sessions not updated for `olderThanDays` days. */
  prune({ olderThanDays, signal } = {}) {
    const body = { older_than_days: olderThanDays }
    return this._client._json('sessions.prune', { body, signal })
  }

  /** Cancel the running turn; resolves to false when none was running. */
  async abort(sessionId, { signal } = {}) {
    const answer = await this._client._json('sessions.abort', {
      params: { session_id: sessionId },
      body: {},
      signal,
    })
    return Boolean(answer?.aborted)
  }

  messages(sessionId, { signal } = {}) {
    return this._client._json('sessions.messages', { params: { session_id: sessionId }, signal })
  }

  /** Send a message (`{text}` or `{parts}`) and yield the turn's NDJSON events as they arrive;
   * `complete` comes last. */
  async *message(sessionId, options = {}) {
    const response = await this._client._open('sessions.message', {
      params: { session_id: sessionId },
      body: { parts: textParts(options) },
      signal: options.signal,
      accept: 'application/x-ndjson',
    })
    for await (const line of lines(response.body)) {
      const ev = parseNdjson(line)
      if (ev) yield ev
    }
  }

  /** Start a turn without waiting for it (202 `{message_id, seq}`); follow exactly this turn
   * with events() or stream() with `after: seq`. */
  submit(sessionId, options = {}) {
    return this._client._json('sessions.message', {
      params: { session_id: sessionId },
      body: { parts: textParts(options), async: true },
      signal: options.signal,
    })
  }

  /** Like submit(), but while a turn runs the message is queued behind it (202
   * `{queued: true, id, position}`) instead of refused; it runs when the turns before it end. */
  enqueue(sessionId, options = {}) {
    return this._client._json('sessions.message', {
      params: { session_id: sessionId },
      body: { parts: textParts(options), async: true, queue: true },
      signal: options.signal,
    })
  }

  /** Cancel a queued message that has not started. */
  cancelQueued(sessionId, queueId, { signal } = {}) {
    return this._client._json('sessions.cancelQueued', {
      params: { session_id: sessionId, queue_id: queueId },
      signal,
    })
  }

  /** The session's event log over Server-Sent Events, from after `after` (default: live).
   * After a drop it reconnects with `after` = the last seq seen: no gap, no duplicate. With
   * `untilComplete` it ends after the next `complete` event. `onOpen` is called each time a
   * connection is established (live events from then on are delivered). */
  events(sessionId, { after, signal, onOpen, untilComplete = false } = {}) {
    return this._client._sse('sessions.events', { session_id: sessionId }, {
      after,
      signal,
      onOpen,
      untilComplete,
    })
  }

  /** `POST /sessions/:id/compact`: summarise the history to free context. */
  compact(sessionId, { signal } = {}) {
    return this._client._json('sessions.compact', {
      params: { session_id: sessionId },
      body: {},
      signal,
    })
  }

  /** The session's changes as a unified diff (one turn's with `turn`). */
  diff(sessionId, { turn, signal } = {}) {
    return this._client._text('sessions.diff', {
      params: { session_id: sessionId },
      query: { turn },
      signal,
    })
  }

  /** Undo the file changes from `messageId` on. */
  revert(sessionId, { messageId, signal } = {}) {
    return this._client._json('sessions.revert', {
      params: { session_id: sessionId },
      body: { message_id: messageId },
      signal,
    })
  }

  /** Redo what the last revert undid. */
  unrevert(sessionId, { signal } = {}) {
    return this._client._json('sessions.unrevert', {
      params: { session_id: sessionId },
      body: {},
      signal,
    })
  }

  /** A new session with this one's history (up to `messageId` when given). */
  fork(sessionId, { messageId, signal } = {}) {
    const body = messageId === undefined ? {} : { message_id: messageId }
    return this._client._json('sessions.fork', {
      params: { session_id: sessionId },
      body,
      signal,
    })
  }

  /** The session's todo list. */
  todo(sessionId, { signal } = {}) {
    return this._client._json('sessions.todo', { params: { session_id: sessionId }, signal })
  }

  /** The WebSocket: events out (`{type, seq, data}`), commands in (message, abort,
   * permission). Reconnects after a drop with `after` = the last seq seen. */
  stream(sessionId, { after, signal } = {}) {
    return new SessionStream(this._client, sessionId, { after, signal })
  }
}

class Permissions extends Resource {
  /** Pending permission requests of a session. */
  list(sessionId, { signal } = {}) {
    return this._client._json('permissions.list', { params: { session_id: sessionId }, signal })
  }

  /** Answer one: `'once'`, `'always'` or `'reject'`. */
  async answer(sessionId, permissionId, response, { signal } = {}) {
    if (!['once', 'always', 'reject'].includes(response)) {
      throw new TypeError(`response must be 'once', 'always' or 'reject', not ${response}`)
    }
    await this._client._json('permissions.answer', {
      params: { session_id: sessionId, permission_id: permissionId },
      body: { response },
      signal,
    })
  }

  /** The Python client's name for answer(). */
  respond(sessionId, permissionId, response, options) {
    return this.answer(sessionId, permissionId, response, options)
  }
}

class Projects extends Resource {
  list({ signal } = {}) {
    return this._client._json('projects.list', { signal })
  }

  create({ name, path, signal }) {
    return this._client._json('projects.create', { body: { name, path }, signal })
  }

  get(projectId, { signal } = {}) {
    return this._client._json('projects.get', { params: { project_id: projectId }, signal })
  }

  async delete(projectId, { signal } = {}) {
    await this._client._json('projects.delete', { params: { project_id: projectId }, signal })
  }
}

class Files extends Resource {
  /** Directory listing relative to the project root (`path` default: the root). */
  list(projectId, { path, signal } = {}) {
    return this._client._json('files.list', {
      params: { project_id: projectId },
      query: { path },
      signal,
    })
  }

  /** One file's text. */
  async read(projectId, path, { signal } = {}) {
    const response = await this._client._open('files.read', {
      params: { project_id: projectId },
      query: { path },
      signal,
      accept: 'text/plain',
    })
    return response.text()
  }
}

class Mcp extends Resource {
  /** The configured MCP servers and their state. */
  list({ signal } = {}) {
    return this._client._json('mcp.list', { signal })
  }

  restart(name, { signal } = {}) {
    return this._client._json('mcp.restart', { params: { name }, body: {}, signal })
  }
}

/** One session's WebSocket, reconnecting with `after=SEQ` when the connection drops. Iterate it
 * for events; send commands with message(), abort(), permission(). */
export class SessionStream {
  constructor(client, sessionId, { after, signal }) {
    this._client = client
    this._sessionId = sessionId
    this._signal = signal
    this.lastSeq = after
    this._closed = false
    this._conn = undefined
    this._onAbort = () => this.close()
    signal?.addEventListener('abort', this._onAbort, { once: true })
  }

  /** The current connection, opening one when there is none. */
  _connection() {
    if (!this._conn) {
      this._conn = this._client._platform
        .websocket(this._client._endpoint, {
          path:
            fillPath(ROUTES['sessions.stream'].path, { session_id: this._sessionId }) +
            queryString({ after: this.lastSeq }),
          signal: this._signal,
        })
        .catch((error) => {
          this._conn = undefined
          throw error
        })
    }
    return this._conn
  }

  /** Resolves once the WebSocket is open (events from then on are delivered). */
  async opened() {
    await this._connection()
  }

  async *[Symbol.asyncIterator]() {
    let failingSince
    let delay = 100
    while (!this._closed) {
      let conn
      try {
        conn = await this._connection()
        failingSince = undefined
        delay = 100
        for await (const text of conn.messages()) {
          const ev = parseWsFrame(text)
          if (ev.seq !== undefined) {
            if (this.lastSeq !== undefined && ev.seq <= this.lastSeq) continue
            this.lastSeq = ev.seq
          }
          yield ev
        }
        if (this._signal?.aborted) throw abortError(this._signal)
        if (this._closed) return
        const { code, reason } = conn.closeInfo()
        if (code === 4404) return // the session was deleted
        if (code === 1000) return
        throw new OpenCodeError(`WebSocket closed (${code}${reason ? ` ${reason}` : ''})`, {
          code: 'CONNECTION_LOST',
          details: { closeCode: code },
        })
      } catch (error) {
        if (this._signal?.aborted) throw abortError(this._signal)
        if (this._closed) return
        if (!retryable(error)) throw error
        const now = Date.now()
        failingSince ??= now
        if (now - failingSince > this._client.options.reconnectTimeout) throw error
      } finally {
        if (conn && this._conn && (await this._conn.catch(() => undefined)) === conn) {
          this._conn = undefined
          conn.close(1000)
        }
      }
      await sleep(delay, this._signal)
      delay = Math.min(delay * 2, 2000)
    }
  }

  /** Send one raw command frame (waits for the connection; opens a new one, after the last
   * seq, when the current one has dropped). */
  async send(frame) {
    let conn = await this._connection()
    if (conn.isClosed()) {
      if (this._conn && (await this._conn.catch(() => undefined)) === conn) this._conn = undefined
      conn = await this._connection()
    }
    conn.send(JSON.stringify(frame))
  }

  /** Start a turn: `message('text')` or `message({parts})`. */
  message(content) {
    return typeof content === 'string'
      ? this.send({ type: 'message', content })
      : this.send({ type: 'message', parts: textParts(content) })
  }

  abort() {
    return this.send({ type: 'abort' })
  }

  permission(id, response) {
    return this.send({ type: 'permission', id, response })
  }

  close() {
    this._closed = true
    this._signal?.removeEventListener('abort', this._onAbort)
    const conn = this._conn
    this._conn = undefined
    conn?.then((c) => c.close(1000)).catch(() => {})
  }
}
