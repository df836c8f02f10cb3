-- Creates a batch of events of one partition. KEYS: queue, notifications,
-- then one record key per event. ARGV: notifications max length, the
-- idempotency window in seconds, then per event: its idempotency key (''
-- for none), its id, its id's 16 bytes, the number n of its record's field/value arguments,
-- those n arguments (`status`, `updated_at`, `traceparent`, `occurred_at`
-- first, in that order), the number k of its query
-- indexes and those k index keys. Checks every id first, so the batch is
-- written whole or not at all; an event whose idempotency key is already
-- taken is not written, and its slot of the reply holds the id of the event
-- that took the key ('' for events written). Each event's queue entry holds
-- its id's bytes (`id`), its notification entry the id with its status,
-- updated_at and traceparent: readers read the rest from the record. Reads
-- arguments by place and builds no tables: this runs once per event.
for i = 3, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return redis.error_reply('HERALD_EXISTS event id already taken')
  end
end
local out = {}
local a = 3
for i = 3, #KEYS do
  local request_key, id, bytes, n = ARGV[a], ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
  local r = a + 4
  local k = tonumber(ARGV[r + n])
  local indexes = r + n + 1
  a = indexes + k
  local prior = request_key ~= '' and redis.call('GET', request_key)
  if prior then
    out[#out + 1] = prior
  else
    if request_key ~= '' then
      redis.call('SET', request_key, id, 'EX', ARGV[2])
    end
    redis.call('HSET', KEYS[i], unpack(ARGV, r, r + n - 1))
    local status, updated_at, trace, occurred_at = ARGV[r + 1], ARGV[r + 3], ARGV[r + 5], ARGV[r + 7]
    for j = indexes, a - 1 do
      redis.call('ZADD', ARGV[j], occurred_at, id)
    end
    redis.call('XADD', KEYS[1], '*', 'id', bytes)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'id', bytes, 'status', status,
               'updated_at', updated_at, 'traceparent', trace)
    out[#out + 1] = ''
  end
end
return out
