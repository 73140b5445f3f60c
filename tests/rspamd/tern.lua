-- Rules that let a test choose rspamd's verdict without relying on its real rules.

-- X-Tern-Test-Action: <action> forces that action ("reject", "soft reject", "rewrite subject",
-- "add header", "greylist" or "no action"), with the SMTP message "Tern test action <action>",
-- and skips every other rule. It runs after the settings of the request, so a Settings header
-- that whitelists the message, or disables the action, still wins.
rspamd_config:register_symbol{
  name = 'TERN_TEST_ACTION',
  type = 'prefilter',
  priority = 1,
  flags = 'empty,nostat',
  callback = function(task)
    local action = task:get_header('X-Tern-Test-Action')
    if action then
      task:set_pre_result{action = action, message = 'Tern test action ' .. action, module = 'tern'}
    end
  end,
}

-- X-Tern-Test-Score: <number> adds that number to the score (symbol TERN_TEST_SCORE), so that
-- the thresholds decide the action as they do for real mail.
rspamd_config:register_symbol{
  name = 'TERN_TEST_SCORE',
  score = 1.0,
  description = 'Score chosen by the test (X-Tern-Test-Score)',
  flags = 'nostat',
  callback = function(task)
    local score = tonumber(task:get_header('X-Tern-Test-Score') or '')
    if score then
      task:insert_result('TERN_TEST_SCORE', score)
    end
  end,
}
