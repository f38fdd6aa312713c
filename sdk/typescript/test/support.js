// What the tests need from outside: a running daemon and the fake LLM it uses as its provider.
// tests/test_ts_sdk.py starts both and passes them in; standalone, set the variables yourself:
//   OPENCODE_TEST_URL     http://127.0.0.1:PORT of the daemon
//   OPENCODE_TEST_TOKEN   its token
//   OPENCODE_TEST_SOCKET  its Unix socket path
//   OPENCODE_TEST_LLM     the fake LLM (python -m tests.fakes.llm) the daemon's provider points to
//   OPENCODE_TEST_DIR     a directory sessions may work in (files get written there)
import net from 'node:net'

export const env = {
  url: process.env.OPENCODE_TEST_URL,
  token: process.env.OPENCODE_TEST_TOKEN,
  socket: process.env.OPENCODE_TEST_SOCKET,
  llm: process.env.OPENCODE_TEST_LLM,
  dir: process.env.OPENCODE_TEST_DIR,
}

for (const [name, value] of Object.entries(env)) {
  if (!value) throw new Error(`set OPENCODE_TEST_${name.toUpperCase()} (see test/support.js)`)
}

/** Queue the fake LLM's next reply (fields of tests.fakes.llm.Reply). */
export async function push(reply) {
  const response = await fetch(`${env.llm}/_push`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(reply),
  })
  if (!response.ok) throw new Error(`fake LLM push: ${response.status}`)
}

/** A TCP proxy to the daemon whose connections the test can cut, as a broken network would. */
export async function cuttableProxy() {
  const target = new URL(env.url)
  const sockets = new Set()
  let accepted = 0
  const server = net.createServer((client) => {
    accepted += 1
    const upstream = net.connect(Number(target.port), target.hostname)
    sockets.add(client)
    sockets.add(upstream)
    client.pipe(upstream)
    upstream.pipe(client)
    const drop = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }
    client.on('error', drop)
    upstream.on('error', drop)
    client.on('close', drop)
    upstream.on('close', drop)
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** How many connections the proxy has accepted so far. */
    accepted: () => accepted,
    cut() {
      for (const socket of sockets) socket.destroy()
      sockets.clear()
    },
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(resolve)
      }),
  }
}

/** Collect an async iterable's items until `stop(item)` is true (that item included). */
export async function collectUntil(iterable, stop) {
  const items = []
  for await (const item of iterable) {
    items.push(item)
    if (stop(item, items)) break
  }
  return items
}
