-- Applies a batch of status changes, each on its own. KEYS: queue,
-- notifications, then one record key per change. ARGV: updated_at (micros),
-- notifications max length, the key prefix (for the status index), then per
-- change: new status, '1' to enqueue, the statuses it may come from joined
-- by commas, and its traceparent ('' keeps the record's). Returns per change
-- {outcome, record or current status}.
local out = {}
local prefix = ARGV[3]
for i = 3, #KEYS do
  local a = 4 + (i - 3) * 4
  local target, enqueue, sources = ARGV[a], ARGV[a + 1], ',' .. ARGV[a + 2] .. ','
  local trace = ARGV[a + 3]
  local current = redis.call('HGET', KEYS[i], 'status')
  if not current then
    out[#out + 1] = {'missing', ''}
  elseif current == target then
    out[#out + 1] = {'same', redis.call('HGETALL', KEYS[i])}
  elseif not string.find(sources, ',' .. current .. ',', 1, true) then
    out[#out + 1] = {'forbidden', current}
  else
    redis.call('HSET', KEYS[i], 'status', target, 'updated_at', ARGV[1])
    if trace ~= '' then redis.call('HSET', KEYS[i], 'traceparent', trace) end
    redis.call('HINCRBY', prefix .. ':stats', current, -1)
    redis.call('HINCRBY', prefix .. ':stats', target, 1)
    local record = redis.call('HGETALL', KEYS[i])
    local f = fields_of(record)
    redis.call('ZREM', prefix .. ':idx:status:' .. current, f.id)
    redis.call('ZADD', prefix .. ':idx:status:' .. target, f.occurred_at, f.id)
    local entry = cjson.encode(f)
    if enqueue == '1' then redis.call('XADD', KEYS[1], '*', 'event', entry) end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', entry)
    out[#out + 1] = {'changed', record}
  end
end
return out
