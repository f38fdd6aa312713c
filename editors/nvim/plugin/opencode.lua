-- opencode.nvim commands (Neovim 0.7+). require('opencode').setup{...} to change defaults.
if vim.g.loaded_opencode then
  return
end
vim.g.loaded_opencode = true

vim.api.nvim_create_user_command('OpencodeSend', function(opts)
  local opencode = require('opencode')
  if opts.range > 0 then
    opencode.send(opencode.selection_text(opts.line1, opts.line2, opts.args))
  else
    opencode.send(opts.args)
  end
end, { nargs = '*', range = true, desc = 'Send text (and a range of lines) to opencode' })

vim.api.nvim_create_user_command('OpencodeAbort', function()
  require('opencode').abort()
end, { desc = 'Abort the running opencode turn' })

vim.api.nvim_create_user_command('OpencodeSessions', function()
  require('opencode').sessions()
end, { desc = 'Pick an opencode session of this directory and continue it' })

if vim.g.opencode_no_mappings ~= true then
  require('opencode').setup({})
end
