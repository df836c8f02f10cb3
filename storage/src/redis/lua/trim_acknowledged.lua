-- Trims the work queue below what every consumer group has acknowledged.
-- KEYS: the queue. A group's bound is its oldest pending entry or, with
-- none pending, its last delivered entry (kept, so the bound is never past
-- it); the queue keeps everything from the lowest bound on. With no group,
-- nothing is trimmed. Returns how many entries went.
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) ~= 'table' or groups.err or #groups == 0 then return 0 end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local lowest, lms, lseq = nil, nil, nil
for _, g in ipairs(groups) do
  local f = {}
  for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
  local bound = f['last-delivered-id']
  if tonumber(f['pending']) > 0 then
    bound = redis.call('XPENDING', KEYS[1], f['name'])[2]
  end
  local ms, seq = parse(bound)
  if lowest == nil or ms < lms or (ms == lms and seq < lseq) then
    lowest, lms, lseq = bound, ms, seq
  end
end
if lms == 0 and lseq == 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', lowest)
