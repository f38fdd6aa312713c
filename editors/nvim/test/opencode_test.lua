-- Headless tests of the plugin against a real daemon (over its Unix socket) whose provider is
-- the fake LLM. Run by tests/test_nvim_plugin.py, or by hand:
--   OPENCODE_TEST_SOCKET=… OPENCODE_TEST_LLM=http://127.0.0.1:PORT OPENCODE_TEST_DIR=… \
--   nvim --headless -u NONE -i NONE --cmd 'set rtp+=editors/nvim' \
--     -c 'runtime! plugin/opencode.lua' -c 'luafile editors/nvim/test/opencode_test.lua'
-- Prints "ok - NAME" / "not ok - NAME: why" per test, exits 0 only when all passed.

local uv = vim.loop
local opencode = require('opencode')

local SOCKET = assert(os.getenv('OPENCODE_TEST_SOCKET'), 'set OPENCODE_TEST_SOCKET')
local LLM = assert(os.getenv('OPENCODE_TEST_LLM'), 'set OPENCODE_TEST_LLM')
local DIR = assert(os.getenv('OPENCODE_TEST_DIR'), 'set OPENCODE_TEST_DIR')
local TIMEOUT = 15000
vim.cmd('cd ' .. vim.fn.fnameescape(DIR))
vim.cmd('filetype on')

local function out(line)
  io.stdout:write(line .. '\n')
  io.stdout:flush()
end

--- Wait (bounded) for `condition`; fail with `what` when it never holds.
local function wait_for(what, condition)
  if not vim.wait(TIMEOUT, condition, 10) then
    error('timed out waiting for ' .. what, 2)
  end
end

-- ---- the fake LLM's queue, over TCP ------------------------------------------------------

local function http_tcp(method, path, body)
  local host, port = LLM:match('^http://([^:/]+):(%d+)')
  local tcp = uv.new_tcp()
  local answer, done = '', false
  tcp:connect(host, tonumber(port), function(err)
    assert(not err, err)
    local payload = body and vim.json.encode(body) or ''
    tcp:write(table.concat({
      method .. ' ' .. path .. ' HTTP/1.1',
      'Host: ' .. host,
      'Connection: close',
      'Content-Type: application/json',
      'Content-Length: ' .. #payload,
      '',
      payload,
    }, '\r\n'))
    -- The fake keeps the connection open: the answer ends at its Content-Length.
    tcp:read_start(function(_, data)
      answer = answer .. (data or '')
      local head_end = answer:find('\r\n\r\n', 1, true)
      local length = tonumber(answer:match('[Cc]ontent%-[Ll]ength: *(%d+)') or '')
      if data == nil or (head_end and length and #answer >= head_end + 3 + length) then
        tcp:close()
        done = true
      end
    end)
  end)
  wait_for('the fake LLM', function()
    return done
  end)
  assert(answer:match('^HTTP/1%.%d 2'), 'fake LLM answered: ' .. answer:sub(1, 200))
  return answer:match('\r\n\r\n(.*)$')
end

local function push(reply)
  http_tcp('POST', '/_push', reply)
end

-- ---- helpers -----------------------------------------------------------------------------

local function buffer_text()
  local buf = opencode.state.bufnr
  if not buf or not vim.api.nvim_buf_is_valid(buf) then
    return ''
  end
  return table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), '\n')
end

local function contains(text)
  return function()
    return buffer_text():find(text, 1, true) ~= nil
  end
end

local function count(haystack, needle)
  local n, at = 0, 1
  while true do
    local found = haystack:find(needle, at, true)
    if not found then
      return n
    end
    n, at = n + 1, found + #needle
  end
end

local function read_file(path)
  local f = io.open(path)
  if not f then
    return nil
  end
  local text = f:read('*a')
  f:close()
  return text
end

local function fresh_session()
  opencode.state = {}
  opencode.config.socket = SOCKET
end

local real_select, real_input = vim.ui.select, vim.ui.input

-- ---- tests -------------------------------------------------------------------------------

local tests = {}

tests['a reply streams into the scratch buffer'] = function()
  fresh_session()
  push({ text = { 'Hello ', 'from ', 'nvim' } })
  vim.cmd('OpencodeSend Add tests')
  wait_for('the turn to complete', contains('-- completed'))
  local text = buffer_text()
  assert(text:find('## You\nAdd tests', 1, true), text)
  assert(text:find('Hello from nvim', 1, true), text)
  local buf = opencode.state.bufnr
  assert(vim.api.nvim_buf_get_name(buf):find('opencode://session_', 1, true))
  assert(vim.api.nvim_buf_get_option(buf, 'buftype') == 'nofile')
  assert(vim.fn.bufwinid(buf) ~= -1, 'the reply buffer is shown')
end

tests['a permission request is asked with vim.ui.select and answered'] = function()
  fresh_session()
  local asked
  vim.ui.select = function(items, opts, on_choice)
    asked = { items = items, prompt = opts.prompt }
    on_choice('once')
  end
  local call = { id = 'p1', name = 'write', input = { path = 'nvim.txt', content = 'from nvim\n' } }
  push({ text = {}, tool_calls = { call } })
  push({ text = { 'written' } })
  vim.cmd('OpencodeSend write the file')
  wait_for('the turn to complete', contains('-- completed'))
  vim.ui.select = real_select
  assert(asked, 'vim.ui.select was called')
  assert(vim.deep_equal(asked.items, { 'once', 'always', 'reject' }), vim.inspect(asked.items))
  assert(asked.prompt:find('write', 1, true), asked.prompt)
  assert(read_file(DIR .. '/nvim.txt') == 'from nvim\n', 'the tool ran after the answer')
  local text = buffer_text()
  for _, expected in ipairs({ '[tool write]', '[permission write: once]', '[result of write]',
    'written' }) do
    assert(text:find(expected, 1, true), expected .. ' missing in:\n' .. text)
  end
end

tests[':OpencodeAbort stops a running turn (its text streamed before the end)'] = function()
  fresh_session()
  push({ text = { 'first', 'never' }, hang = true })
  vim.cmd('OpencodeSend go')
  wait_for('the first piece, streamed while the turn runs', contains('first'))
  assert(opencode.state.busy, 'the turn is still running')
  vim.cmd('OpencodeAbort')
  wait_for('the turn to end aborted', contains('-- aborted'))
  assert(not buffer_text():find('never', 1, true))
  assert(not opencode.state.busy)
end

tests['the visual mapping sends the selection with its path and line range'] = function()
  fresh_session()
  vim.cmd('cd ' .. vim.fn.fnameescape(DIR))
  vim.cmd('edit ' .. vim.fn.fnameescape(DIR .. '/pkg/mod.py'))
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { 'x = 1', 'y = 2', 'z = 3' })
  local prompted
  vim.ui.input = function(opts, on_confirm)
    prompted = opts.prompt
    on_confirm('explain this')
  end
  push({ text = { 'It sets x and y.' } })
  vim.cmd('normal 1GVj\\os')
  wait_for('the turn to complete', contains('-- completed'))
  vim.ui.input = real_input
  assert(prompted, 'vim.ui.input asked for the instruction')
  local text = buffer_text()
  assert(text:find('explain this\n\npkg/mod.py lines 1-2:\n```python\nx = 1\ny = 2\n```', 1, true),
    text)
  assert(text:find('It sets x and y.', 1, true), text)
  local requests = http_tcp('GET', '/_requests')
  assert(requests:find('pkg/mod.py lines 1-2:', 1, true), 'the selection reached the model')
  vim.cmd('bwipeout!')
end

tests[':OpencodeSessions picks a session of this directory and continues it'] = function()
  fresh_session()
  vim.cmd('cd ' .. vim.fn.fnameescape(DIR))
  push({ text = { 'remembered' } })
  vim.cmd('OpencodeSend first words')
  wait_for('the turn to complete', contains('-- completed'))
  local wanted = opencode.state.session_id
  fresh_session()
  local offered
  vim.ui.select = function(items, opts, on_choice)
    offered = items
    for _, item in ipairs(items) do
      assert(opts.format_item(item):find(item.id, 1, true))
      if item.id == wanted then
        return on_choice(item)
      end
    end
    on_choice(nil)
  end
  vim.cmd('OpencodeSessions')
  wait_for('the session to be continued', function()
    return opencode.state.session_id == wanted and buffer_text():find('remembered', 1, true)
  end)
  vim.ui.select = real_select
  for _, item in ipairs(offered) do
    assert(item.directory == uv.fs_realpath(DIR), 'only sessions of this directory: '
      .. tostring(item.directory))
  end
  assert(buffer_text():find('## You\nfirst words', 1, true), buffer_text())
  push({ text = { 'continued' } })
  vim.cmd('OpencodeSend and more')
  wait_for('the next turn in the same session', contains('-- completed'))
  assert(buffer_text():find('continued', 1, true), buffer_text())
  assert(opencode.state.session_id == wanted)
end

tests['a dropped connection resumes with after=SEQ: no gap, no duplicate'] = function()
  fresh_session()
  -- A proxy socket in front of the daemon's, whose connections the test cuts.
  local proxy_path = DIR .. '/proxy.sock'
  os.remove(proxy_path)
  local conns, accepted = {}, 0
  local server = uv.new_pipe(false)
  assert(server:bind(proxy_path))
  server:listen(16, function()
    local client = uv.new_pipe(false)
    server:accept(client)
    accepted = accepted + 1
    local upstream = uv.new_pipe(false)
    table.insert(conns, client)
    table.insert(conns, upstream)
    local function close_both()
      for _, h in ipairs({ client, upstream }) do
        if not h:is_closing() then
          h:close()
        end
      end
    end
    upstream:connect(SOCKET, function(err)
      if err then
        return close_both()
      end
      client:read_start(function(_, data)
        if data then
          upstream:write(data)
        else
          close_both()
        end
      end)
      upstream:read_start(function(_, data)
        if data then
          client:write(data)
        else
          close_both()
        end
      end)
    end)
  end)
  opencode.config.socket = proxy_path
  push({ text = { 'once', 'never' }, hang = true })
  vim.cmd('OpencodeSend go')
  wait_for('the first piece', contains('once'))
  local before = accepted
  for _, h in ipairs(conns) do
    if not h:is_closing() then
      h:close()
    end
  end
  -- The abort goes straight to the daemon: only the follower's reconnect passes the proxy.
  local aborted
  opencode.config.socket = SOCKET
  opencode.request('POST', '/sessions/' .. opencode.state.session_id .. '/abort', vim.empty_dict(),
    function(err, answer)
      aborted = err or answer.aborted
    end)
  opencode.config.socket = proxy_path
  wait_for('the abort', function()
    return aborted ~= nil
  end)
  assert(aborted == true, tostring(aborted))
  wait_for('the turn to end aborted', contains('-- aborted'))
  server:close()
  opencode.config.socket = SOCKET
  assert(accepted > before, 'the follower reconnected')
  assert((opencode.state.reconnects or 0) >= 1)
  assert(count(buffer_text(), 'once') == 1, 'no duplicate:\n' .. buffer_text())
end

tests['the socket follows the CLI rules'] = function()
  local saved = opencode.config.socket
  opencode.config.socket = nil
  local env = { 'OPENCODE_URL', 'OPENCODE_SOCKET', 'XDG_RUNTIME_DIR' }
  local old = {}
  for _, name in ipairs(env) do
    old[name] = vim.env[name]
    vim.env[name] = nil
  end
  local ok, err = pcall(function()
    assert(opencode.socket_path() == '/tmp/opencode-' .. uv.getuid() .. '/opencoded.sock')
    vim.env.XDG_RUNTIME_DIR = '/run/user/7'
    assert(opencode.socket_path() == '/run/user/7/opencode/opencoded.sock')
    vim.env.OPENCODE_SOCKET = '/s.sock'
    assert(opencode.socket_path() == '/s.sock')
    vim.env.OPENCODE_URL = 'unix:///u.sock'
    assert(opencode.socket_path() == '/u.sock')
  end)
  for _, name in ipairs(env) do
    vim.env[name] = old[name]
  end
  opencode.config.socket = saved
  assert(ok, err)
end

-- ---- runner ------------------------------------------------------------------------------

local only = os.getenv('OPENCODE_TEST_ONLY')
local names = {}
for name in pairs(tests) do
  if not only or name:find(only, 1, true) then
    table.insert(names, name)
  end
end
table.sort(names)
local failed = 0
for _, name in ipairs(names) do
  local ok, err = xpcall(tests[name], debug.traceback)
  vim.ui.select, vim.ui.input = real_select, real_input
  if ok then
    out('ok - ' .. name)
  else
    failed = failed + 1
    out('not ok - ' .. name .. ': ' .. tostring(err))
  end
end
out(string.format('# %d passed, %d failed', #names - failed, failed))
vim.cmd(failed == 0 and 'qall!' or 'cquit 1')
