// @opencode/client against a real daemon (TCP with token, and the Unix socket) whose provider is
// the fake LLM. Run by tests/test_ts_sdk.py, or standalone: see support.js for the variables.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { test } from 'node:test'

import { OpenCodeClient, OpenCodeError, resolveEndpoint } from '../src/index.js'
import { OpenCodeClient as BrowserClient } from '../src/browser.js'
import { collectUntil, cuttableProxy, env, push } from './support.js'

const tcp = () => new OpenCodeClient(env.url, { token: env.token })
const unix = () => new OpenCodeClient(`unix://${env.socket}`)
const transports = { tcp, unix }

const seqs = (events) => events.map((e) => e.seq)
const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

for (const [name, make] of Object.entries(transports)) {
  test(`${name}: the spec's shape streams a turn's NDJSON events`, async () => {
    const client = make()
    await push({ text: ['Hi ', 'there'] })
    const session = await client.sessions.create({ directory: env.dir })
    const events = []
    for await (const chunk of client.sessions.message(session.id, { text: 'Add tests' })) {
      events.push(chunk)
    }
    assert.equal(events.at(-1).type, 'complete')
    assert.equal(events.at(-1).data.status, 'completed')
    const text = events.filter((e) => e.type === 'text-delta').map((e) => e.data.text)
    assert.equal(text.join(''), 'Hi there')
    assert.deepEqual(seqs(events), range(1, events.length))
    const messages = await client.sessions.messages(session.id)
    assert.deepEqual(
      messages.map((m) => m.role),
      ['user', 'assistant'],
    )
  })

  test(`${name}: sessions list, get, delete; errors carry code, message, details`, async () => {
    const client = make()
    const session = await client.sessions.create({ directory: env.dir, title: 'sdk' })
    assert.equal((await client.sessions.get(session.id)).title, 'sdk')
    const page = await client.sessions.list({ limit: 500 })
    assert.ok(page.some((s) => s.id === session.id))
    await client.sessions.delete(session.id)
    const error = await client.sessions.get(session.id).catch((e) => e)
    assert.ok(error instanceof OpenCodeError)
    assert.equal(error.code, 'SESSION_NOT_FOUND')
    assert.equal(error.status, 404)
    assert.deepEqual(error.details, { sessionId: session.id })
    assert.match(error.message, /not found/i)
    const bad = await client.sessions.list({ limit: 0 }).catch((e) => e)
    assert.equal(bad.code, 'INVALID_REQUEST')
    assert.equal(bad.details.field, 'limit')
  })
}

test('tcp: a wrong token is UNAUTHORIZED; OPENCODE_TOKEN and OPENCODE_URL are the defaults', async () => {
  const wrong = new OpenCodeClient(env.url, { token: 'sk-opencode-wrong' })
  const error = await wrong.sessions.list().catch((e) => e)
  assert.equal(error.code, 'UNAUTHORIZED')
  assert.equal(error.status, 401)
  assert.equal((await wrong.health()).status, 'ok') // /health needs no token
  const saved = { ...process.env }
  try {
    process.env.OPENCODE_URL = env.url
    process.env.OPENCODE_TOKEN = env.token
    const fromEnv = new OpenCodeClient()
    assert.equal(fromEnv.url, env.url)
    assert.ok(Array.isArray(await fromEnv.sessions.list({ limit: 1 })))
    delete process.env.OPENCODE_URL
    process.env.OPENCODE_SOCKET = env.socket
    const socketDefault = new OpenCodeClient()
    assert.equal(socketDefault.url, `unix://${env.socket}`)
    assert.equal((await socketDefault.health()).status, 'ok')
  } finally {
    process.env = saved
  }
})

test('endpoint rules are the Python client\'s', () => {
  const e = resolveEndpoint(undefined, undefined, { XDG_RUNTIME_DIR: '/run/user/7' })
  assert.equal(e.socketPath, '/run/user/7/opencode/opencoded.sock')
  assert.equal(resolveEndpoint(undefined, undefined, { OPENCODE_SOCKET: '/s' }).socketPath, '/s')
  assert.equal(
    resolveEndpoint(undefined, undefined, {}).socketPath,
    `/tmp/opencode-${process.getuid()}/opencoded.sock`,
  )
  const viaEnv = resolveEndpoint(undefined, undefined, {
    OPENCODE_URL: 'https://h:1/',
    OPENCODE_TOKEN: 't',
  })
  assert.equal(viaEnv.display, 'https://h:1')
  assert.equal(viaEnv.token, 't')
  // The token file of the data dir; never looked up for the socket.
  const dataDir = join(env.socket, '..', 'data')
  const fromFile = resolveEndpoint('http://127.0.0.1:1', undefined, { OPENCODE_DATA_DIR: dataDir })
  assert.equal(fromFile.token, readFileSync(join(dataDir, 'token'), 'utf8').trim())
  assert.equal(resolveEndpoint('unix:///x.sock', undefined, { OPENCODE_TOKEN: 't' }).token, undefined)
  assert.throws(() => resolveEndpoint('ftp://x'), (e) => e instanceof OpenCodeError)
})

test('no daemon: CONNECT_ERROR', async () => {
  const client = new OpenCodeClient(`unix://${env.socket}.missing`)
  const error = await client.health().catch((e) => e)
  assert.ok(error instanceof OpenCodeError)
  assert.equal(error.code, 'CONNECT_ERROR')
})

test('providers, models, projects and files', async () => {
  const client = unix()
  assert.ok((await client.providers()).some((p) => p.id === 'anthropic'))
  assert.ok((await client.models()).some((m) => m.provider === 'anthropic'))
  const project = await client.projects.create({ name: 'sdk-proj', path: env.dir })
  assert.ok((await client.projects.list()).some((p) => p.id === project.id))
  assert.equal((await client.projects.get(project.id)).name, project.name)
  const listing = await client.files.list(project.id)
  assert.ok(listing.some((f) => f.name === 'pkg' && f.type === 'directory'))
  const inner = await client.files.list(project.id, { path: 'pkg' })
  assert.deepEqual(
    inner.map((f) => f.name),
    ['mod.py'],
  )
  assert.equal(await client.files.read(project.id, 'pkg/mod.py'), 'x = 1\n')
  const escape = await client.files.read(project.id, '../../etc/passwd').catch((e) => e)
  assert.ok(escape instanceof OpenCodeError && escape.status >= 400)
  await client.projects.delete(project.id)
  const gone = await client.projects.get(project.id).catch((e) => e)
  assert.equal(gone.code, 'NOT_FOUND')
})

test('a permission request is listed and answered; the turn goes on', async () => {
  const client = tcp()
  const call = { id: 'c1', name: 'write', input: { path: 'perm.txt', content: 'yes\n' } }
  await push({ text: [], tool_calls: [call] })
  await push({ text: ['done'] })
  const session = await client.sessions.create({ directory: env.dir })
  const types = []
  for await (const chunk of client.sessions.message(session.id, { text: 'write it' })) {
    types.push(chunk.type)
    if (chunk.type === 'permission') {
      const [pending] = await client.permissions.list(session.id)
      assert.equal(pending.id, chunk.data.id)
      assert.equal(pending.tool, 'write')
      await client.permissions.answer(session.id, pending.id, 'once')
      assert.deepEqual(await client.permissions.list(session.id), [])
    }
  }
  assert.deepEqual(types.slice(-1), ['complete'])
  assert.ok(types.includes('tool-result'))
  assert.equal(readFileSync(join(env.dir, 'perm.txt'), 'utf8'), 'yes\n')
  const unknown = await client.permissions.answer(session.id, 'perm_unknown', 'reject').catch((e) => e)
  assert.equal(unknown.code, 'NOT_FOUND')
})

test('abort ends a running turn with status aborted', async () => {
  const client = unix()
  await push({ text: ['first', 'never'], hang: true })
  const session = await client.sessions.create({ directory: env.dir })
  const events = []
  for await (const chunk of client.sessions.message(session.id, { text: 'go' })) {
    events.push(chunk)
    if (chunk.type === 'text-delta') assert.equal(await client.sessions.abort(session.id), true)
  }
  assert.equal(events.at(-1).type, 'complete')
  assert.equal(events.at(-1).data.status, 'aborted')
  assert.equal(await client.sessions.abort(session.id), false) // nothing runs any more
})

test('AbortSignal: a pre-aborted call, a stream cut mid-turn, an idle SSE follow', async () => {
  const client = unix()
  const before = AbortSignal.abort()
  await assert.rejects(client.sessions.list({ signal: before }), { name: 'AbortError' })
  await assert.rejects(client.health({ signal: before }), { name: 'AbortError' })

  await push({ text: ['first', 'never'], hang: true })
  const session = await client.sessions.create({ directory: env.dir })
  const controller = new AbortController()
  const seen = []
  await assert.rejects(
    (async () => {
      for await (const chunk of client.sessions.message(session.id, {
        text: 'go',
        signal: controller.signal,
      })) {
        seen.push(chunk.type)
        if (chunk.type === 'text-delta') controller.abort()
      }
    })(),
    { name: 'AbortError' },
  )
  assert.deepEqual(seen, ['text-delta'])
  await client.sessions.abort(session.id)

  const idle = new AbortController()
  const follow = collectUntil(client.sessions.events(session.id, { signal: idle.signal }), () => false)
  idle.abort()
  await assert.rejects(follow, { name: 'AbortError' })

  const ws = new AbortController()
  const stream = client.sessions.stream(session.id, { signal: ws.signal })
  await stream.opened()
  const wsFollow = collectUntil(stream, () => false)
  ws.abort()
  await assert.rejects(wsFollow, { name: 'AbortError' })
})

// The turn hangs after its first text piece, so the cut surely comes before the turn's end;
// the abort goes over the socket, so the proxy only sees the follower's reconnect.
test('SSE: a dropped connection resumes after the last seq, no gap, no duplicate', async () => {
  const proxy = await cuttableProxy()
  try {
    const client = new OpenCodeClient(proxy.url, { token: env.token })
    const session = await client.sessions.create({ directory: env.dir })
    await push({ text: ['a', 'never'], hang: true })
    const accepted = await client.sessions.submit(session.id, { text: 'go' })
    assert.ok(accepted.message_id)
    let cutAt
    let aborting
    const events = await collectUntil(client.sessions.events(session.id, { after: 0 }), (ev) => {
      if (ev.type === 'text-delta' && cutAt === undefined) {
        cutAt = proxy.accepted()
        proxy.cut()
        aborting = unix().sessions.abort(session.id)
      }
      return ev.type === 'complete'
    })
    assert.equal(await aborting, true)
    assert.ok(proxy.accepted() > cutAt, 'the client reconnected')
    assert.deepEqual(seqs(events), range(1, events.length))
    assert.equal(events.at(-1).data.status, 'aborted')
  } finally {
    await proxy.close()
  }
})

test('WebSocket: commands in, events out; a drop resumes with after=SEQ', async () => {
  const proxy = await cuttableProxy()
  try {
    const client = new OpenCodeClient(proxy.url, { token: env.token })
    const session = await client.sessions.create({ directory: env.dir })
    await push({ text: ['1', 'never'], hang: true })
    const stream = client.sessions.stream(session.id, { after: 0 })
    await stream.message('over the socket')
    let cutAt
    let aborting
    const events = []
    for await (const ev of stream) {
      events.push(ev)
      if (ev.type === 'text-delta' && cutAt === undefined) {
        cutAt = proxy.accepted()
        proxy.cut()
        aborting = unix().sessions.abort(session.id)
      }
      if (ev.type === 'complete') break
    }
    assert.equal(await aborting, true)
    assert.ok(proxy.accepted() > cutAt, 'the client reconnected')
    assert.deepEqual(seqs(events), range(1, events.length))
    assert.equal(events.at(-1).data.status, 'aborted')
    assert.equal(events[0].data.text, '1')
    // A bad command is answered with an error frame (no seq), the stream stays up.
    await stream.send({ type: 'nonsense' })
    const [error] = await collectUntil(stream, () => true)
    assert.equal(error.type, 'error')
    assert.equal(error.seq, undefined)
    assert.equal(error.data.code, 'INVALID_REQUEST')
    stream.close()
  } finally {
    await proxy.close()
  }
})

test('WebSocket: a command sent after a drop goes on a new connection', async () => {
  const proxy = await cuttableProxy()
  try {
    const client = new OpenCodeClient(proxy.url, { token: env.token })
    const session = await client.sessions.create({ directory: env.dir })
    const stream = client.sessions.stream(session.id, { after: 0 })
    await stream.opened()
    const before = proxy.accepted()
    proxy.cut()
    await push({ text: ['again'] })
    // The cut is seen as the socket's close; until then send() may still use the old one.
    const conn = await stream._conn
    await new Promise((resolve) => {
      const check = () => (conn.isClosed() ? resolve() : setImmediate(check))
      check()
    })
    await stream.message('after the cut')
    assert.ok(proxy.accepted() > before, 'a new connection')
    const events = await collectUntil(stream, (ev) => ev.type === 'complete')
    assert.equal(events.at(-1).data.status, 'completed')
    assert.deepEqual(seqs(events), range(1, events.length))
    stream.close()
  } finally {
    await proxy.close()
  }
})

test('WebSocket over the Unix socket: abort and a permission answer as commands', async () => {
  const client = unix()
  const call = { id: 'w1', name: 'write', input: { path: 'ws.txt', content: 'ws\n' } }
  await push({ text: [], tool_calls: [call] })
  await push({ text: ['written'] })
  const session = await client.sessions.create({ directory: env.dir })
  const stream = client.sessions.stream(session.id)
  await stream.opened()
  await stream.message({ text: 'write over ws' })
  const events = await collectUntil(stream, (ev) => {
    if (ev.type === 'permission') stream.permission(ev.data.id, 'once')
    return ev.type === 'complete'
  })
  assert.equal(events.at(-1).data.status, 'completed')
  assert.equal(readFileSync(join(env.dir, 'ws.txt'), 'utf8'), 'ws\n')

  await push({ text: ['first', 'never'], hang: true })
  await stream.message('hang')
  const aborted = await collectUntil(stream, (ev) => {
    if (ev.type === 'text-delta') stream.abort()
    return ev.type === 'complete'
  })
  assert.equal(aborted.at(-1).data.status, 'aborted')
  // Leaving the loop closed the socket; iterating again reconnects after lastSeq. Deleting
  // the session then ends the stream (close 4404) instead of reconnecting.
  const rest = collectUntil(stream, () => false)
  await stream.opened()
  await client.sessions.delete(session.id)
  assert.deepEqual(await rest, [])
})

test('a refused WebSocket handshake is the API error', async () => {
  const stream = unix().sessions.stream('session_nope')
  const error = await collectUntil(stream, () => true).catch((e) => e)
  assert.ok(error instanceof OpenCodeError)
  assert.equal(error.code, 'SESSION_NOT_FOUND')
})

test('the daemon feed: /events tells of a session created', async () => {
  const client = unix()
  const controller = new AbortController()
  let opened
  const connected = new Promise((resolve) => (opened = resolve))
  const feed = client.events({ signal: controller.signal, onOpen: opened })
  const created = collectUntil(feed, (ev) => ev.type === 'session.created')
  await connected // from here on no notice is missed
  const session = await client.sessions.create({ directory: env.dir })
  const events = await created
  assert.equal(events.at(-1).data.session_id, session.id)
  controller.abort()
})

test('the browser entry (fetch) works over TCP with the token', async () => {
  const client = new BrowserClient(env.url, { token: env.token })
  await push({ text: ['from ', 'fetch'] })
  const session = await client.sessions.create({ directory: env.dir })
  const events = []
  for await (const chunk of client.sessions.message(session.id, { text: 'hi' })) events.push(chunk)
  assert.equal(events.at(-1).type, 'complete')
  const text = events.filter((e) => e.type === 'text-delta').map((e) => e.data.text)
  assert.equal(text.join(''), 'from fetch')
  const error = await client.sessions.get('session_nope').catch((e) => e)
  assert.equal(error.code, 'SESSION_NOT_FOUND')
  assert.throws(() => new BrowserClient('unix:///x.sock'), OpenCodeError)
})

// Node 22 has a global WebSocket; on Node 20 tests/test_ts_sdk.py passes --experimental-websocket.
test(
  'the browser entry: the global WebSocket with ?token=, and a refusal is the API error',
  { skip: globalThis.WebSocket ? false : 'no global WebSocket in this Node' },
  async () => {
    const client = new BrowserClient(env.url, { token: env.token })
    await push({ text: ['over ', 'ws'] })
    const session = await client.sessions.create({ directory: env.dir })
    const stream = client.sessions.stream(session.id, { after: 0 })
    await stream.opened()
    await stream.message('hi')
    const events = await collectUntil(stream, (ev) => ev.type === 'complete')
    assert.deepEqual(seqs(events), range(1, events.length))
    const text = events.filter((e) => e.type === 'text-delta').map((e) => e.data.text)
    assert.equal(text.join(''), 'over ws')
    const refused = await collectUntil(client.sessions.stream('session_nope'), () => true).catch(
      (e) => e,
    )
    assert.equal(refused.code, 'SESSION_NOT_FOUND')
  },
)
