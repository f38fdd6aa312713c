-- HTTP/1.1 over the daemon's Unix socket with Neovim's libuv binding (vim.loop), nothing else.
-- One connection per request (`Connection: close`); bodies may be chunked or sized.
-- Callbacks run in the main loop (vim.schedule), so they may call any Neovim API.

local uv = vim.loop

local M = {}

-- Decodes a response as bytes arrive: the head, then body pieces through on_body.
local Parser = {}
Parser.__index = Parser

local function new_parser(on_head, on_body)
  return setmetatable({ buf = '', state = 'head', on_head = on_head, on_body = on_body }, Parser)
end

function Parser:_head()
  local stop = self.buf:find('\r\n\r\n', 1, true)
  if not stop then
    return false
  end
  local head = self.buf:sub(1, stop - 1)
  self.buf = self.buf:sub(stop + 4)
  local status = tonumber(head:match('^HTTP/1%.%d (%d%d%d)'))
  if not status then
    error('not an HTTP answer')
  end
  local headers = {}
  for name, value in head:gmatch('\r\n([^:\r\n]+):%s*([^\r\n]*)') do
    headers[name:lower()] = value
  end
  self.status, self.headers = status, headers
  if (headers['transfer-encoding'] or ''):lower():find('chunked', 1, true) then
    self.state = 'chunked'
  elseif headers['content-length'] then
    self.state, self.left = 'sized', tonumber(headers['content-length'])
  else
    self.state = 'until-close'
  end
  self.on_head(status, headers)
  if self.state == 'sized' and self.left == 0 then
    self.state = 'done'
  end
  return true
end

function Parser:_chunked()
  while true do
    local eol = self.buf:find('\r\n', 1, true)
    if not eol then
      return
    end
    local size = tonumber(self.buf:sub(1, eol - 1):match('^%x+'), 16)
    if not size then
      error('bad chunk size')
    end
    if size == 0 then
      self.state = 'done'
      return
    end
    if #self.buf < eol + 1 + size + 2 then
      return
    end
    self.on_body(self.buf:sub(eol + 2, eol + 1 + size))
    self.buf = self.buf:sub(eol + size + 4)
  end
end

--- Feed bytes; returns true once the whole answer is in.
function Parser:feed(data)
  self.buf = self.buf .. data
  if self.state == 'head' and not self:_head() then
    return false
  end
  if self.state == 'chunked' then
    self:_chunked()
  elseif self.state == 'sized' then
    local piece = self.buf:sub(1, self.left)
    self.buf = self.buf:sub(#piece + 1)
    self.left = self.left - #piece
    if #piece > 0 then
      self.on_body(piece)
    end
    if self.left == 0 then
      self.state = 'done'
    end
  elseif self.state == 'until-close' and #self.buf > 0 then
    self.on_body(self.buf)
    self.buf = ''
  end
  return self.state == 'done'
end

local function encode_body(body)
  if body == nil then
    return nil
  end
  return vim.json.encode(body)
end

--- Open a request on `socket`. `handlers`: on_head(status, headers), on_body(bytes),
--- on_done(err) (err is nil when the answer ended normally, else a message; "connection lost"
--- when the connection dropped before the end). Returns a handle with close().
function M.open(socket, method, path, body, handlers)
  local pipe = uv.new_pipe(false)
  local closed = false
  local handle = {}
  local finished = false

  local function finish(err)
    if finished then
      return
    end
    finished = true
    if not closed then
      closed = true
      pipe:read_stop()
      pipe:close()
    end
    vim.schedule(function()
      handlers.on_done(err)
    end)
  end

  local cancelled = false
  function handle.close()
    cancelled = true
    finish('closed')
  end

  local parser = new_parser(function(status, headers)
    vim.schedule(function()
      if handlers.on_head then
        handlers.on_head(status, headers)
      end
    end)
  end, function(bytes)
    vim.schedule(function()
      if not cancelled then
        handlers.on_body(bytes)
      end
    end)
  end)

  pipe:connect(socket, function(err)
    if err then
      return finish('cannot reach opencoded at ' .. socket .. ': ' .. err)
    end
    local payload = encode_body(body)
    local lines = {
      method .. ' ' .. path .. ' HTTP/1.1',
      'Host: localhost',
      'Connection: close',
      'Accept: application/json, text/event-stream',
    }
    if payload then
      table.insert(lines, 'Content-Type: application/json')
      table.insert(lines, 'Content-Length: ' .. #payload)
    end
    pipe:write(table.concat(lines, '\r\n') .. '\r\n\r\n' .. (payload or ''))
    pipe:read_start(function(read_err, data)
      if read_err then
        return finish('connection lost: ' .. read_err)
      end
      if data == nil then
        -- EOF: the end of an until-close body, else a cut.
        return finish((parser.state == 'until-close' or parser.state == 'done') and nil
          or 'connection lost')
      end
      local ok, done = pcall(parser.feed, parser, data)
      if not ok then
        return finish('bad answer from opencoded: ' .. tostring(done))
      end
      if done then
        finish(nil)
      end
    end)
  end)
  return handle
end

local function decode(text)
  if text == nil or text:match('^%s*$') then
    return nil
  end
  local ok, value = pcall(vim.json.decode, text)
  if ok then
    return value
  end
  return nil
end

--- The API's error as a message: "CODE: message".
function M.error_text(status, text)
  local doc = decode(text)
  if type(doc) == 'table' and type(doc.error) == 'table' then
    return tostring(doc.error.code) .. ': ' .. tostring(doc.error.message)
  end
  return 'HTTP ' .. tostring(status)
end

--- A whole request: callback(err, value, status) with the decoded JSON answer.
function M.request(socket, method, path, body, callback)
  local status
  local parts = {}
  M.open(socket, method, path, body, {
    on_head = function(s)
      status = s
    end,
    on_body = function(bytes)
      table.insert(parts, bytes)
    end,
    on_done = function(err)
      -- on_body pieces were scheduled before on_done: all are in.
      local text = table.concat(parts)
      if err then
        return callback(err, nil, status)
      end
      if status >= 400 then
        return callback(M.error_text(status, text), nil, status)
      end
      callback(nil, decode(text), status)
    end,
  })
end

--- Server-Sent Events: on_event({type, seq, data}) per event, on_done(err) at the end.
function M.sse(socket, path, on_event, on_done)
  local status
  local buffer, id, kind, data = '', nil, nil, {}
  local error_body = {}
  local function line(text)
    if text == '' then
      if #data > 0 then
        local ok, value = pcall(vim.json.decode, table.concat(data, '\n'))
        on_event({
          type = kind or 'message',
          seq = tonumber(id or ''),
          data = ok and type(value) == 'table' and value or {},
        })
      end
      kind, data = nil, {}
    elseif text:sub(1, 1) ~= ':' then
      local field, value = text:match('^([^:]*):? ?(.*)$')
      if field == 'id' then
        id = value
      elseif field == 'event' then
        kind = value
      elseif field == 'data' then
        table.insert(data, value)
      end
    end
  end
  return M.open(socket, 'GET', path, nil, {
    on_head = function(s)
      status = s
    end,
    on_body = function(bytes)
      if status and status >= 400 then
        table.insert(error_body, bytes)
        return
      end
      buffer = buffer .. bytes
      while true do
        local eol = buffer:find('\n', 1, true)
        if not eol then
          break
        end
        line((buffer:sub(1, eol - 1):gsub('\r$', '')))
        buffer = buffer:sub(eol + 1)
      end
    end,
    on_done = function(err)
      if not err and status and status >= 400 then
        err = M.error_text(status, table.concat(error_body))
        return on_done(err, status)
      end
      on_done(err, status)
    end,
  })
end

return M
