-- Lua shared by the status scripts (after buckets.lua): one status change
-- of the event whose id's 16 bytes are `bytes`, with its status index
-- entry (and its status's count, if bucketed: the script calls
-- counts_flush before it returns), its user's
-- unread count (a change into or out of PROCESSED: a field of the
-- partition's `unread` hash, gone at zero), its notification entry (the
-- id, `change`: the new status, time and trace, and `unread`: the user's
-- unread count, when the change moved it) and
-- (entering a status that enqueues) its queue entry, as the create script
-- writes them. `target` and `sources` are status codes (see record.rs),
-- `now` is updated_at as the head holds it, `trace` a packed traceparent
-- ('' keeps the record's). Reads the record once and writes it back with
-- the new head. Returns {outcome, detail}: {'missing', ''}, {'same', the
-- record}, {'forbidden', current status code} or {'changed', the record as
-- it is now}. An event leaving SCHEDULED leaves the partition's schedule;
-- one entering or leaving PENDING enters or leaves its user's queued
-- index.
local STATUS_NAMES = {['1'] = 'PENDING', ['2'] = 'PROCESSED', ['3'] = 'OPENED', ['4'] = 'FAILED',
                      ['5'] = 'SCHEDULED', ['6'] = 'CANCELLED'}
-- The statuses whose index is in buckets (see buckets.lua) and counted in
-- the partition's `counts` hash; PENDING and SCHEDULED (which events
-- leave) are one sorted set each, counted by its size.
local BUCKETED = {['2'] = true, ['3'] = true, ['4'] = true, ['6'] = true}
local function change_status(queue, notifications, record_key, bytes, prefix, now, max_len,
                             target, enqueue, sources, trace)
  local record = redis.call('GET', record_key)
  if not record then
    return {'missing', ''}
  end
  local current = string.sub(record, 1, 1)
  if current == target then
    return {'same', record}
  elseif not string.find(sources, current, 1, true) then
    return {'forbidden', current}
  end
  if trace == '' then trace = string.sub(record, 26, 50) end
  record = target .. now .. string.sub(record, 10, 25) .. trace .. string.sub(record, 51)
  redis.call('SET', record_key, record)
  -- The index score is occurred_at (head bytes 17..25), as the create wrote it.
  local score = string.format('%.0f', struct.unpack('>i8', record, 18))
  local from, to = STATUS_NAMES[current], STATUS_NAMES[target]
  if BUCKETED[current] then
    bucket_remove(prefix .. ':idx:status:' .. from, score, bytes)
    count(from, -1)
  else
    redis.call('ZREM', prefix .. ':idx:status:' .. from, bytes)
  end
  if BUCKETED[target] then
    bucket_add(prefix .. ':idx:status:' .. to, score, bytes)
    count(to, 1)
  else
    redis.call('ZADD', prefix .. ':idx:status:' .. to, score, bytes)
  end
  if enqueue == '1' then redis.call('XADD', queue, '*', 'id', bytes) end
  if current == '5' then redis.call('ZREM', prefix .. ':scheduled', bytes) end
  -- The user id is the first line of the record's `ix`.
  local user
  if target == '1' or current == '1' or target == '2' or current == '2' then
    local ix = string.sub(record, 53, 52 + struct.unpack('>I2', record, 51))
    user = string.match(ix, '^[^\n]*')
  end
  if current == '1' then redis.call('ZREM', prefix .. ':queued:' .. user, bytes) end
  if target == '1' then redis.call('ZADD', prefix .. ':queued:' .. user, 0, bytes) end
  -- The user's unread count (PROCESSED). The inbox itself is the user's
  -- index, read through.
  local entry = {'id', bytes, 'change', target .. now .. trace}
  if target == '2' or current == '2' then
    local unread = redis.call('HINCRBY', prefix .. ':unread', user, target == '2' and 1 or -1)
    if unread <= 0 then redis.call('HDEL', prefix .. ':unread', user) end
    entry[5], entry[6] = 'unread', math.max(unread, 0)
  end
  redis.call('XADD', notifications, 'MAXLEN', '~', max_len, '*', unpack(entry))
  return {'changed', record}
end
