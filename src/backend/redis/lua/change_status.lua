-- Lua shared by the status scripts: one status change of event `id`, with
-- its count, its status index entry, its notification entry and (entering
-- a status that enqueues) its queue entry. Returns {outcome, detail}:
-- {'missing', ''}, {'same', record fields}, {'forbidden', current status}
-- or {'changed', entry fields}.
local function change_status(queue, notifications, record_key, id, prefix, now, max_len,
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
  local f = fields_of(redis.call('HGETALL', record_key))
  redis.call('ZREM', prefix .. ':idx:status:' .. current, id)
  redis.call('ZADD', prefix .. ':idx:status:' .. target, f.occurred_at, id)
  local entry = entry_of(f, target, now)
  if enqueue == '1' then redis.call('XADD', queue, '*', unpack(entry)) end
  redis.call('XADD', notifications, 'MAXLEN', '~', max_len, '*', unpack(entry))
  return {'changed', entry}
end
