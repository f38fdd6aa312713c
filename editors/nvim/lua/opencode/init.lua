-- opencode.nvim: talk to opencoded over its Unix socket (Neovim 0.7+, libuv only).
--
--   :OpencodeSend {text}      send to the current session (one is created for the cwd)
--   :'<,'>OpencodeSend {text} the same, with the lines, their file path and line range
--   <leader>os (visual)       ask for an instruction, send it with the selection
--   :OpencodeAbort            stop the running turn
--   :OpencodeSessions         pick a session of the current directory and continue it
--
-- A turn is sent with "async": true and followed over Server-Sent Events from the 202's seq;
-- a dropped connection is resumed with after=<last seq seen>, so nothing is lost or repeated.

local http = require('opencode.http')
local uv = vim.loop

local M = {}

M.config = {
  socket = nil, -- default: the CLI's rules (see M.socket_path)
  provider = nil,
  model = nil,
  mappings = true, -- <leader>os in visual mode
  split = 'botright vsplit', -- how the reply buffer opens when not shown
  reconnect_timeout = 30000, -- ms a dropped stream keeps trying
  result_lines = 8, -- lines of a tool result shown
}

-- session_id, bufnr, last_seq, following (the open SSE handle), busy
M.state = {}

local function notify(msg, level)
  vim.notify('opencode: ' .. msg, level or vim.log.levels.INFO)
end

--- The socket: config, else $OPENCODE_URL when it is unix://, else $OPENCODE_SOCKET, else
--- $XDG_RUNTIME_DIR/opencode/opencoded.sock, else /tmp/opencode-$UID/opencoded.sock.
function M.socket_path()
  if M.config.socket then
    return M.config.socket
  end
  local url = vim.env.OPENCODE_URL
  if url and url:match('^unix:') then
    return (url:gsub('^unix:', ''):gsub('^//', ''))
  end
  if vim.env.OPENCODE_SOCKET and vim.env.OPENCODE_SOCKET ~= '' then
    return vim.env.OPENCODE_SOCKET
  end
  if vim.env.XDG_RUNTIME_DIR and vim.env.XDG_RUNTIME_DIR ~= '' then
    return vim.env.XDG_RUNTIME_DIR .. '/opencode/opencoded.sock'
  end
  return '/tmp/opencode-' .. uv.getuid() .. '/opencoded.sock'
end

local function request(method, path, body, callback)
  http.request(M.socket_path(), method, path, body, function(err, value, status)
    if err and not callback then
      notify(err, vim.log.levels.ERROR)
    end
    if callback then
      callback(err, value, status)
    end
  end)
end
M.request = request

local function enc(segment)
  return (tostring(segment):gsub('[^%w%-_.~]', function(c)
    return string.format('%%%02X', string.byte(c))
  end))
end

-- ---- the reply buffer --------------------------------------------------------------------

local function buffer_for(session_id)
  local name = 'opencode://' .. session_id
  local existing = vim.fn.bufnr(name)
  if existing ~= -1 and vim.api.nvim_buf_is_valid(existing) then
    return existing
  end
  local buf = vim.api.nvim_create_buf(true, true)
  vim.api.nvim_buf_set_name(buf, name)
  vim.api.nvim_buf_set_option(buf, 'buftype', 'nofile')
  vim.api.nvim_buf_set_option(buf, 'bufhidden', 'hide')
  vim.api.nvim_buf_set_option(buf, 'swapfile', false)
  vim.api.nvim_buf_set_option(buf, 'filetype', 'markdown')
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, { '# opencode ' .. session_id })
  return buf
end

local function show(buf)
  if vim.fn.bufwinid(buf) == -1 then
    local current = vim.api.nvim_get_current_win()
    vim.cmd(M.config.split)
    vim.api.nvim_win_set_buf(0, buf)
    vim.api.nvim_set_current_win(current)
  end
end

local function scroll(buf)
  local win = vim.fn.bufwinid(buf)
  if win ~= -1 then
    vim.api.nvim_win_set_cursor(win, { vim.api.nvim_buf_line_count(buf), 0 })
  end
end

-- Lines appended as whole entries; text deltas continue the last line.
local function append_lines(buf, lines)
  vim.api.nvim_buf_set_lines(buf, -1, -1, false, lines)
  M.state.in_text = false
  scroll(buf)
end

local function append_text(buf, text)
  local pieces = vim.split(text, '\n', true)
  if not M.state.in_text then
    vim.api.nvim_buf_set_lines(buf, -1, -1, false, { '' })
    M.state.in_text = true
  end
  local last = vim.api.nvim_buf_line_count(buf)
  local current = vim.api.nvim_buf_get_lines(buf, last - 1, last, false)[1] or ''
  pieces[1] = current .. pieces[1]
  vim.api.nvim_buf_set_lines(buf, last - 1, last, false, pieces)
  scroll(buf)
end

local function one_line(value, max)
  local text = type(value) == 'string' and value or vim.json.encode(value)
  text = text:gsub('\n', '\\n')
  if #text > max then
    text = text:sub(1, max) .. '…'
  end
  return text
end

local function result_lines(data)
  local output = data.output
  if type(output) ~= 'string' then
    output = output == nil and '' or vim.json.encode(output)
  end
  local lines = vim.split(output, '\n', true)
  local head = { string.format('[%s %s]', data.error == true and 'error from' or 'result of',
    tostring(data.tool)) }
  for i = 1, math.min(#lines, M.config.result_lines) do
    table.insert(head, '    ' .. lines[i])
  end
  if #lines > M.config.result_lines then
    table.insert(head, string.format('    … %d more lines', #lines - M.config.result_lines))
  end
  return head
end

-- ---- permissions -------------------------------------------------------------------------

local function ask_permission(session_id, data)
  local prompt = string.format('opencode wants to run %s %s', tostring(data.tool),
    one_line(data.args or {}, 200))
  vim.ui.select({ 'once', 'always', 'reject' }, { prompt = prompt }, function(choice)
    local answer = choice or 'reject'
    local buf = buffer_for(session_id)
    append_lines(buf, { string.format('[permission %s: %s]', tostring(data.tool), answer) })
    request('POST', '/sessions/' .. enc(session_id) .. '/permissions/' .. enc(data.id),
      { response = answer }, function(err)
        if err then
          notify('answering the permission request: ' .. err, vim.log.levels.ERROR)
        end
      end)
  end)
end

-- ---- following a turn --------------------------------------------------------------------

local function render(session_id, ev)
  local buf = buffer_for(session_id)
  local data = ev.data or {}
  if ev.type == 'text-delta' then
    append_text(buf, tostring(data.text or ''))
  elseif ev.type == 'tool-call' or ev.type == 'tool' then
    append_lines(buf, { string.format('[tool %s] %s', tostring(data.tool),
      one_line(data.args or {}, 300)) })
  elseif ev.type == 'tool-result' then
    append_lines(buf, result_lines(data))
  elseif ev.type == 'permission' then
    append_lines(buf, { string.format('[permission asked: %s %s]', tostring(data.tool),
      one_line(data.args or {}, 200)) })
    ask_permission(session_id, data)
  elseif ev.type == 'error' then
    append_lines(buf, { string.format('[error %s] %s', tostring(data.code),
      tostring(data.message)) })
  elseif ev.type == 'complete' then
    local cost = type(data.cost) == 'number' and string.format(' · $%.6f', data.cost) or ''
    local tokens = type(data.tokens) == 'number' and string.format(' · %d tokens', data.tokens)
      or ''
    append_lines(buf, { string.format('-- %s%s%s --', tostring(data.status), tokens, cost), '' })
  end
end

local function stop_following()
  local following = M.state.following
  M.state.following = nil
  if following then
    following.close()
  end
end

--- Follow the session's events after `after` until the turn's `complete`; reconnects after a
--- drop with after = the last seq seen.
function M.follow(session_id, after)
  stop_following()
  M.state.last_seq = after
  M.state.busy = true
  local failing_since
  local delay = 100
  local token = {}
  M.state.follow_token = token

  local function connect()
    if M.state.follow_token ~= token then
      return
    end
    local path = '/sessions/' .. enc(session_id) .. '/events?after=' .. tostring(M.state.last_seq)
    local done_turn = false
    local opened = false
    M.state.following = http.sse(M.socket_path(), path, function(ev)
      if not opened then
        opened, failing_since, delay = true, nil, 100
      end
      if ev.seq and M.state.last_seq and ev.seq <= M.state.last_seq then
        return
      end
      M.state.last_seq = ev.seq or M.state.last_seq
      render(session_id, ev)
      if ev.type == 'complete' then
        done_turn = true
        M.state.busy = false
        stop_following()
      end
    end, function(err, status)
      if done_turn or M.state.follow_token ~= token or err == 'closed' then
        return
      end
      if status and status >= 400 then
        M.state.busy = false
        return notify(tostring(err), vim.log.levels.ERROR)
      end
      -- Dropped (or ended without the turn's end): resume after the last seq.
      M.state.reconnects = (M.state.reconnects or 0) + 1
      local now = uv.now()
      failing_since = failing_since or now
      if now - failing_since > M.config.reconnect_timeout then
        M.state.busy = false
        return notify('lost the connection to opencoded: ' .. tostring(err), vim.log.levels.ERROR)
      end
      vim.defer_fn(connect, delay)
      delay = math.min(delay * 2, 2000)
    end)
  end
  connect()
end

-- ---- sessions and messages ---------------------------------------------------------------

local function cwd()
  return uv.fs_realpath(vim.fn.getcwd()) or vim.fn.getcwd()
end

local function with_session(callback)
  if M.state.session_id then
    return callback(M.state.session_id)
  end
  local body = { directory = cwd(), provider = M.config.provider, model = M.config.model }
  request('POST', '/sessions', body, function(err, session)
    if err then
      return notify('creating a session: ' .. err, vim.log.levels.ERROR)
    end
    M.state.session_id = session.id
    callback(session.id)
  end)
end

--- Send `text` to the current session (created for the cwd on first use) and stream the reply
--- into its buffer.
function M.send(text)
  if not text or text:match('^%s*$') then
    return notify('nothing to send', vim.log.levels.WARN)
  end
  with_session(function(session_id)
    local buf = buffer_for(session_id)
    M.state.bufnr = buf
    show(buf)
    local lines = { '', '## You' }
    vim.list_extend(lines, vim.split(text, '\n', true))
    vim.list_extend(lines, { '', '## opencode' })
    append_lines(buf, lines)
    local path = '/sessions/' .. enc(session_id) .. '/messages'
    local body = { parts = { { type = 'text', text = text } }, async = true }
    request('POST', path, body, function(err, accepted)
      if err then
        append_lines(buf, { '[error] ' .. err })
        return notify(err, vim.log.levels.ERROR)
      end
      M.follow(session_id, accepted.seq)
    end)
  end)
end

--- The lines first..last of the current buffer as a message part: path, range, then the text.
function M.selection_text(first, last, instruction)
  local buf = vim.api.nvim_get_current_buf()
  local lines = vim.api.nvim_buf_get_lines(buf, first - 1, last, false)
  local name = vim.api.nvim_buf_get_name(buf)
  local path = name ~= '' and vim.fn.fnamemodify(name, ':.') or '[No Name]'
  local out = {}
  if instruction and instruction ~= '' then
    table.insert(out, instruction)
    table.insert(out, '')
  end
  table.insert(out, string.format('%s lines %d-%d:', path, first, last))
  table.insert(out, '```' .. vim.api.nvim_buf_get_option(buf, 'filetype'))
  vim.list_extend(out, lines)
  table.insert(out, '```')
  return table.concat(out, '\n')
end

--- Visual mode: ask for an instruction, send it with the selected lines.
function M.send_selection()
  local first, last = vim.fn.line("'<"), vim.fn.line("'>")
  vim.ui.input({ prompt = 'opencode: ' }, function(instruction)
    if instruction == nil then
      return
    end
    M.send(M.selection_text(first, last, instruction))
  end)
end

function M.abort()
  local session_id = M.state.session_id
  if not session_id then
    return notify('no session', vim.log.levels.WARN)
  end
  request('POST', '/sessions/' .. enc(session_id) .. '/abort', vim.empty_dict(), function(err, answer)
    if err then
      return notify('abort: ' .. err, vim.log.levels.ERROR)
    end
    if type(answer) == 'table' and answer.aborted == false then
      notify('nothing was running')
    end
  end)
end

local function render_history(session_id, messages)
  local buf = buffer_for(session_id)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, { '# opencode ' .. session_id })
  for _, message in ipairs(messages or {}) do
    local lines = { '', message.role == 'user' and '## You' or '## opencode' }
    for _, part in ipairs(message.parts or {}) do
      if part.type == 'text' and type(part.text) == 'string' then
        vim.list_extend(lines, vim.split(part.text, '\n', true))
      elseif part.type == 'tool' or part.tool then
        table.insert(lines, string.format('[tool %s]', tostring(part.tool or part.name)))
      end
    end
    append_lines(buf, lines)
  end
  return buf
end

--- Continue `session_id`: it becomes the current session, its history fills its buffer.
function M.continue(session_id, callback)
  stop_following()
  M.state.follow_token = nil
  M.state.session_id = session_id
  request('GET', '/sessions/' .. enc(session_id) .. '/messages', nil, function(err, messages)
    if err then
      return notify(err, vim.log.levels.ERROR)
    end
    local buf = render_history(session_id, messages)
    M.state.bufnr = buf
    show(buf)
    if callback then
      callback(buf)
    end
  end)
end

--- Pick a session of the current directory (newest first) and continue it.
function M.sessions()
  request('GET', '/sessions?limit=500', nil, function(err, sessions)
    if err then
      return notify(err, vim.log.levels.ERROR)
    end
    local here = cwd()
    local mine = {}
    for _, s in ipairs(sessions or {}) do
      if type(s.directory) == 'string' and (uv.fs_realpath(s.directory) or s.directory) == here then
        table.insert(mine, s)
      end
    end
    if #mine == 0 then
      return notify('no session in ' .. here)
    end
    vim.ui.select(mine, {
      prompt = 'opencode sessions in ' .. here,
      format_item = function(s)
        local title = s.title ~= vim.NIL and s.title or s.id
        return string.format('%s  (%s, %s)', tostring(title), s.id, tostring(s.status))
      end,
    }, function(choice)
      if choice then
        M.continue(choice.id)
      end
    end)
  end)
end

function M.setup(opts)
  M.config = vim.tbl_extend('force', M.config, opts or {})
  if M.config.mappings then
    vim.api.nvim_set_keymap('x', '<leader>os', ":<C-u>lua require('opencode').send_selection()<CR>",
      { noremap = true, silent = true, desc = 'opencode: send the selection' })
  else
    pcall(vim.api.nvim_del_keymap, 'x', '<leader>os') -- the one plugin/opencode.lua made
  end
end

return M
