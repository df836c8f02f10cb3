-- Lua shared by the status scripts: one status change of one event, with its
-- count, its status index entry, its notification entry and (entering a
-- status that enqueues) its queue entry. Returns {outcome, detail}:
-- {'missing', ''}, {'same', record}, {'forbidden', current status} or
-- {'changed', record}.
local function change_status(queue, notifications, record_key, prefix, now, max_len,
                             target, enqueue, sources, trace)
  local current = redis.call('HGET', record_key, 'status')
  if not current then
    return {'missing', ''}
  elseif current == target then
    return {'same', redis.call('HGETALL', record_key)}
  elseif not string.find(',' .. sources .. ',', ',' .. current .. ',', 1, true) then
    return {'forbidden', current}
  end
  redis.call('HSET', record_key, 'status', target, 'updated_at', now)
  if trace ~= '' then redis.call('HSET', record_key, 'traceparent', trace) end
  redis.call('HINCRBY', prefix .. ':stats', current, -1)
  redis.call('HINCRBY', prefix .. ':stats', target, 1)
  local record = redis.call('HGETALL', record_key)
  local f = fields_of(record)
  redis.call('ZREM', prefix .. ':idx:status:' .. current, f.id)
  redis.call('ZADD', prefix .. ':idx:status:' .. target, f.occurred_at, f.id)
  local entry = cjson.encode(f)
  if enqueue == '1' then redis.call('XADD', queue, '*', 'event', entry) end
  redis.call('XADD', notifications, 'MAXLEN', '~', max_len, '*', 'event', entry)
  return {'changed', record}
end
