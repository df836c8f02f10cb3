-- Lua shared by the status scripts: one status change of event `id` (whose
-- 16 bytes are `bytes`), with its status index entry, its notification
-- entry and (entering a status that enqueues) its queue entry, which hold
-- the id's bytes as the create script's do. Reads the record with one HMGET
-- of the fields it needs. Returns {outcome, detail}: {'missing', ''}, {'same',
-- record fields}, {'forbidden', current status} or {'changed', the
-- record's changing fields and its protobuf bytes whole, as they are now}.
local function change_status(queue, notifications, record_key, id, bytes, prefix, now,
                             max_len, target, enqueue, sources, trace)
  local r = redis.call('HMGET', record_key, 'status', 'occurred_at', 'traceparent',
                       'pb', 'pb1', 'pb2', 'pb3', 'pb4', 'pb5', 'pb6', 'pb7')
  local current = r[1]
  if not current then
    return {'missing', ''}
  elseif current == target then
    return {'same', redis.call('HGETALL', record_key)}
  elseif not string.find(',' .. sources .. ',', ',' .. current .. ',', 1, true) then
    return {'forbidden', current}
  end
  if trace == '' then trace = r[3] or '' end
  redis.call('HSET', record_key, 'status', target, 'updated_at', now, 'traceparent', trace)
  redis.call('ZREM', prefix .. ':idx:status:' .. current, id)
  redis.call('ZADD', prefix .. ':idx:status:' .. target, r[2], id)
  local pb = r[4]
  for j = 5, 11 do
    if not r[j] then break end
    pb = pb .. r[j]
  end
  if enqueue == '1' then redis.call('XADD', queue, '*', 'id', bytes) end
  redis.call('XADD', notifications, 'MAXLEN', '~', max_len, '*', 'id', bytes, 'status', target,
             'updated_at', now, 'traceparent', trace)
  return {'changed', {'pb', pb, 'status', target, 'updated_at', now, 'traceparent', trace}}
end
