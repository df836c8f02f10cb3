-- Lua shared by the status scripts: one status change of the event whose
-- id's 16 bytes are `bytes`, with its status index entry, its notification
-- entry (the id and `change`: the new status, time and trace) and
-- (entering a status that enqueues) its queue entry, as the create script
-- writes them. `target` and `sources` are
-- status codes (see record.rs), `now` is updated_at as the head holds it,
-- `trace` a packed traceparent ('' keeps the record's). Reads and rewrites
-- the record's head in place (GETRANGE, SETRANGE). Returns {outcome,
-- detail}: {'missing', ''}, {'same', the record}, {'forbidden', current
-- status code} or {'changed', the record as it is now}.
local STATUS_NAMES = {['1'] = 'PENDING', ['2'] = 'PROCESSED', ['3'] = 'OPENED', ['4'] = 'FAILED'}
local function change_status(queue, notifications, record_key, bytes, prefix, now, max_len,
                             target, enqueue, sources, trace)
  local head = redis.call('GETRANGE', record_key, 0, 41)
  local current = string.sub(head, 1, 1)
  if head == '' then
    return {'missing', ''}
  elseif current == target then
    return {'same', redis.call('GET', record_key)}
  elseif not string.find(sources, current, 1, true) then
    return {'forbidden', current}
  end
  if trace == '' then trace = string.sub(head, 18, 42) end
  local change = target .. now .. trace
  redis.call('SETRANGE', record_key, 0, target .. now .. string.sub(head, 10, 17) .. trace)
  local from = prefix .. ':idx:status:' .. STATUS_NAMES[current]
  -- The index score is occurred_at, which only the indexes and the
  -- protobuf bytes hold.
  local score = redis.call('ZSCORE', from, bytes) or '0'
  redis.call('ZREM', from, bytes)
  redis.call('ZADD', prefix .. ':idx:status:' .. STATUS_NAMES[target], score, bytes)
  if enqueue == '1' then redis.call('XADD', queue, '*', 'id', bytes) end
  redis.call('XADD', notifications, 'MAXLEN', '~', max_len, '*', 'id', bytes, 'change', change)
  return {'changed', redis.call('GET', record_key)}
end
