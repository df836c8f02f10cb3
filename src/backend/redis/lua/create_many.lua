-- Creates a batch of events of one partition. KEYS: queue, notifications,
-- then one record key per event. ARGV: notifications max length, the
-- idempotency window in seconds, the partition's key prefix (for the query
-- indexes and counts), then per event its idempotency key ('' for
-- none), its id, the number n of its record's field/value arguments and
-- those n arguments. Checks every id first, so the batch is written whole
-- or not at all; an event whose idempotency key is already taken is not
-- written, and its slot of the reply holds the id of the event that took
-- the key ('' for events written). Each event's queue and notification
-- entries carry its record's `pb` with its status.
local prefix = ARGV[3]
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return redis.error_reply('HERALD_EXISTS event id already taken')
  end
end
local out = {}
local first = 4
for i = 3, #KEYS do
  local request_key, id, n = ARGV[first], ARGV[first + 1], tonumber(ARGV[first + 2])
  local record = {unpack(ARGV, first + 3, first + n + 2)}
  first = first + n + 3
  local prior = false
  if request_key ~= '' then
    prior = redis.call('GET', request_key)
  end
  if prior then
    out[#out + 1] = prior
  else
    if request_key ~= '' then
      redis.call('SET', request_key, id, 'EX', ARGV[2])
    end
    redis.call('HSET', KEYS[i], unpack(record))
    redis.call('HINCRBY', prefix .. ':stats', 'PENDING', 1)
    local f = fields_of(record)
    for _, index in ipairs(index_keys(prefix, f)) do
      redis.call('ZADD', index, f.occurred_at, id)
    end
    local entry = entry_of(f, f.status, f.updated_at)
    redis.call('XADD', KEYS[1], '*', unpack(entry))
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(entry))
    out[#out + 1] = ''
  end
end
return out
