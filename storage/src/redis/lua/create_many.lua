-- Creates a batch of events of one partition. KEYS: queue, notifications,
-- then one record key per event. ARGV: notifications max length, the
-- idempotency window in seconds, the partition's schedule, then per event:
-- its idempotency key ('' for none), its id's 16 bytes, its record (see
-- record.rs), its occurred_at (micros, the index score), its deliver_at
-- (micros) if it is SCHEDULED ('' otherwise), its user's queued index
-- (see keys.rs; '' while the deployment does not use ordering), the
-- number k of its query indexes and those k index keys. Claims every record key first (SET NX),
-- so the batch is written whole or not at all (an id already taken undoes
-- the claims). A record key already holding the very record is this
-- batch run before (the client sent it again after losing the answer, as
-- redis-rs does when a connection drops during a failover): that event is
-- answered as written and not written again. An event whose idempotency key is already taken is not
-- written, and its slot of the reply holds the id bytes of the event that
-- took the key ('' for events written). Each event's queue entry (or, if
-- it is SCHEDULED, its schedule entry) holds its id's bytes (`id`), as
-- does its user's queued index if it is PENDING; its
-- notification entry the id and the head's status, updated_at and
-- traceparent (`change`): readers read the rest from the record. Reads
-- arguments by place and builds no tables per event: this runs once per
-- event.
-- On one Redis node, a batch without idempotency keys or scheduled events
-- is written by `create_plain` (store.rs) with the same writes in
-- MULTI/EXEC instead (the records in one MSET, each index key's entries in
-- one ZADD): a change to what is written here goes there too.
local a = 4
-- The events an earlier run of this batch wrote (nil while there are none).
local written
for i = 3, #KEYS do
  if not redis.call('SET', KEYS[i], ARGV[a + 2], 'NX') then
    if redis.call('GET', KEYS[i]) == ARGV[a + 2] then
      written = written or {}
      written[i] = true
    else
      for j = 3, i - 1 do
        if not (written and written[j]) then redis.call('DEL', KEYS[j]) end
      end
      return redis.error_reply('HERALD_EXISTS event id already taken')
    end
  end
  a = a + 7 + tonumber(ARGV[a + 6])
end
local out = {}
a = 4
for i = 3, #KEYS do
  local request_key, bytes, record, occurred_at = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local due, queued = ARGV[a + 4], ARGV[a + 5]
  local indexes = a + 7
  a = indexes + tonumber(ARGV[a + 6])
  local prior = request_key ~= '' and redis.call('GET', request_key)
  if written and written[i] then
    out[#out + 1] = ''
  elseif prior then
    redis.call('DEL', KEYS[i])
    out[#out + 1] = prior
  else
    if request_key ~= '' then
      redis.call('SET', request_key, bytes, 'EX', ARGV[2])
    end
    for j = indexes, a - 1 do
      redis.call('ZADD', ARGV[j], occurred_at, bytes)
    end
    if due == '' then
      redis.call('XADD', KEYS[1], '*', 'id', bytes)
      if queued ~= '' then redis.call('ZADD', queued, 0, bytes) end
    else
      redis.call('ZADD', ARGV[3], due, bytes)
    end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'id', bytes, 'change',
               string.sub(record, 1, 9) .. string.sub(record, 26, 50))
    out[#out + 1] = ''
  end
end
return out
