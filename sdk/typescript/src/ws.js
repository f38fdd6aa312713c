// A minimal RFC 6455 client over Node's http upgrade: text frames, fragmentation, ping/pong and
// close. Node 20 has no global WebSocket, and neither Node's (22+) nor the browser's can use a
// Unix socket or send an Authorization header; this one does both with no dependency.
import { createHash, randomBytes } from 'node:crypto'

import { errorFromBody, OpenCodeError } from './core.js'

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

/** Open a WebSocket with `module.request(options)`; resolves to a connection once the 101 is
 * in, rejects with the API's error when the handshake is refused. */
export function connectWebSocket(module, options, { signal } = {}) {
  const key = randomBytes(16).toString('base64')
  const headers = {
    ...options.headers,
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Key': key,
  }
  return new Promise((resolve, reject) => {
    // Its own connection, never a pooled one: after a refused handshake the connection must
    // not carry another request (the server still treats it as the WebSocket's).
    const req = module.request({ ...options, headers, signal, agent: false })
    req.once('error', reject)
    req.once('response', (res) => {
      const parts = []
      res.on('data', (c) => parts.push(c))
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8')
        req.destroy()
        reject(errorFromBody(res.statusCode, text, res.headers['retry-after']))
      })
      res.on('error', reject)
    })
    req.once('upgrade', (res, socket, head) => {
      const expected = createHash('sha1').update(key + GUID).digest('base64')
      if (res.headers['sec-websocket-accept'] !== expected) {
        socket.destroy()
        reject(new OpenCodeError('bad WebSocket handshake answer', { code: 'PROTOCOL_ERROR' }))
        return
      }
      resolve(new Connection(socket, head))
    })
    req.end()
  })
}

class Connection {
  constructor(socket, head) {
    this._socket = socket
    this._buffer = head?.length ? Buffer.from(head) : Buffer.alloc(0)
    this._fragments = []
    this._queue = []
    this._waiting = undefined
    this._close = undefined // {code, reason}
    this._sentClose = false
    socket.setNoDelay(true)
    socket.on('data', (chunk) => {
      this._buffer = Buffer.concat([this._buffer, chunk])
      this._parse()
    })
    socket.on('close', () => this._finish(1006, 'connection dropped'))
    socket.on('error', () => this._finish(1006, 'connection dropped'))
    if (this._buffer.length) queueMicrotask(() => this._parse())
  }

  _parse() {
    while (this._buffer.length >= 2) {
      const b0 = this._buffer[0]
      const b1 = this._buffer[1]
      let length = b1 & 0x7f
      let offset = 2
      if (length === 126) {
        if (this._buffer.length < 4) return
        length = this._buffer.readUInt16BE(2)
        offset = 4
      } else if (length === 127) {
        if (this._buffer.length < 10) return
        length = Number(this._buffer.readBigUInt64BE(2))
        offset = 10
      }
      const masked = (b1 & 0x80) !== 0
      const maskAt = offset
      if (masked) offset += 4
      if (this._buffer.length < offset + length) return
      let payload = this._buffer.subarray(offset, offset + length)
      if (masked) {
        const mask = this._buffer.subarray(maskAt, maskAt + 4)
        payload = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]))
      }
      this._buffer = this._buffer.subarray(offset + length)
      this._frame(b0 & 0x80, b0 & 0x0f, Buffer.from(payload))
    }
  }

  _frame(fin, opcode, payload) {
    if (opcode === 0x9) return this._write(0xa, payload) // ping -> pong
    if (opcode === 0xa) return undefined
    if (opcode === 0x8) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005
      const reason = payload.subarray(2).toString('utf8')
      if (!this._sentClose) this._write(0x8, payload.subarray(0, 2))
      this._sentClose = true
      this._finish(code, reason)
      this._socket.end()
      return undefined
    }
    if (opcode === 0x1 || opcode === 0x2 || opcode === 0x0) {
      this._fragments.push(payload)
      if (fin) {
        const message = Buffer.concat(this._fragments).toString('utf8')
        this._fragments = []
        this._push(message)
      }
    }
    return undefined
  }

  _push(message) {
    this._queue.push(message)
    this._wake()
  }

  _wake() {
    const waiting = this._waiting
    this._waiting = undefined
    waiting?.()
  }

  _finish(code, reason) {
    if (this._close) return
    this._close = { code, reason }
    // end() lets a close frame just written go out; destroy() follows if the peer lingers.
    this._socket.end()
    setTimeout(() => this._socket.destroy(), 1000).unref()
    this._wake()
  }

  _write(opcode, payload) {
    if (this._socket.destroyed) return
    const mask = randomBytes(4)
    const length = payload.length
    let header
    if (length < 126) {
      header = Buffer.from([0x80 | opcode, 0x80 | length])
    } else if (length < 65536) {
      header = Buffer.alloc(4)
      header[0] = 0x80 | opcode
      header[1] = 0x80 | 126
      header.writeUInt16BE(length, 2)
    } else {
      header = Buffer.alloc(10)
      header[0] = 0x80 | opcode
      header[1] = 0x80 | 127
      header.writeBigUInt64BE(BigInt(length), 2)
    }
    const body = Buffer.from(payload.map((byte, i) => byte ^ mask[i % 4]))
    this._socket.write(Buffer.concat([header, mask, body]))
  }

  /** Text messages as they arrive; ends when the connection closes (see closeInfo()). */
  async *messages() {
    while (true) {
      if (this._queue.length) {
        yield this._queue.shift()
        continue
      }
      if (this._close) return
      await new Promise((resolve) => (this._waiting = resolve))
    }
  }

  send(text) {
    if (this._close) {
      throw new OpenCodeError('WebSocket is closed', { code: 'CONNECTION_LOST' })
    }
    this._write(0x1, Buffer.from(text, 'utf8'))
  }

  close(code = 1000) {
    if (this._close) return
    if (!this._sentClose) {
      const payload = Buffer.alloc(2)
      payload.writeUInt16BE(code, 0)
      this._write(0x8, payload)
      this._sentClose = true
    }
    this._finish(code, '')
  }

  closeInfo() {
    return this._close ?? { code: 1006, reason: '' }
  }

  isClosed() {
    return this._close !== undefined
  }
}
