// Compiled with `tsc -p test/types` (no output): index.d.ts is valid TypeScript, reached through
// the package's own name and exports map, and describes the calls as the tests make them.
import {
  type Event,
  OpenCodeClient,
  OpenCodeError,
  ROUTES,
  type Session,
  type SessionStream,
} from '@opencode/client'

// The spec's snippet, as written.
const client = new OpenCodeClient('http://localhost:8080')

const session = await client.sessions.create({
  provider: 'anthropic',
  model: 'claude-3-5-sonnet'
})

for await (const chunk of client.sessions.message(session.id, {
  text: 'Add tests'
})) {
  console.log(chunk)
}

// The rest of the surface.
const signal = new AbortController().signal
const unix = new OpenCodeClient('unix:///run/user/1000/opencode/opencoded.sock', { token: 't' })
const fromOptions = new OpenCodeClient({ url: 'http://127.0.0.1:3000', reconnectTimeout: 5000 })
const sessions: Session[] = await unix.sessions.list({ limit: 10, before: session.id, signal })
const one: Session = await fromOptions.sessions.get(sessions[0].id, { signal })
const aborted: boolean = await client.sessions.abort(one.id)
await client.sessions.delete(one.id, { signal })
const accepted = await client.sessions.submit(one.id, { parts: [{ type: 'text', text: 'hi' }] })
const seq: number = accepted.seq
for await (const ev of client.sessions.events(one.id, { after: seq, untilComplete: true })) {
  const event: Event = ev
  console.log(event.type, event.seq, event.data)
}
const stream: SessionStream = client.sessions.stream(one.id, { after: 0, signal })
await stream.opened()
await stream.message('go')
await stream.message({ parts: [{ type: 'text', text: 'go' }] })
await stream.permission('perm_x', 'always')
await stream.abort()
for await (const ev of stream) console.log(ev.seq, stream.lastSeq)
stream.close()
const pending = await client.permissions.list(one.id)
await client.permissions.answer(one.id, pending[0].id, 'once', { signal })
const providers = await client.providers()
const models = await client.models({ signal })
const project = await client.projects.create({ name: 'p', path: '/tmp/p' })
const files = await client.files.list(project.id, { path: 'src' })
const text: string = await client.files.read(project.id, files[0].name)
for await (const notice of client.events({ onOpen: () => {} })) console.log(notice.data.session_id)
const route: string = ROUTES['sessions.create'].path
const diff: string = await client.sessions.diff(one.id, { turn: 'turn_x' })
const forked: Session = await client.sessions.fork(one.id, { messageId: 'msg_x' })
await client.sessions.revert(one.id, { messageId: 'msg_x' })
await client.sessions.unrevert(one.id)
await client.sessions.compact(one.id)
await client.sessions.todo(one.id)
await client.mcp.list()
await client.mcp.restart('everything')
const metrics: string = await client.metrics()
console.log(aborted, providers, models, text, route, diff, forked, metrics)

try {
  await client.health()
} catch (error) {
  if (error instanceof OpenCodeError) console.log(error.code, error.message, error.details, error.status)
}

// Wrong uses must not compile.
// @ts-expect-error: not a permission answer
await client.permissions.answer(one.id, 'perm_x', 'maybe')
// @ts-expect-error: text and parts together
client.sessions.message(one.id, { text: 'a', parts: [] })
// @ts-expect-error: a session id is needed
await client.sessions.get()
