-- Puts one event in the open digest of its key (see digests.rs). KEYS:
-- the partition's membership hash (event id bytes -> digest id), its
-- open digests (digest key -> digest id), its due digests (zset by due
-- micros), the event's record, its user's queued index. ARGV: the event
-- id's bytes, the digest key, the id a new digest gets (32 hex digits),
-- now and the window (micros), max_events, the partition's key prefix.
-- Returns the digest's id (the one the event joined before, if it did),
-- or nil if the event is gone. The event that fills a digest seals it
-- (no longer open) and makes it due now.
local joined = redis.call('HGET', KEYS[1], ARGV[1])
if joined then
  return joined
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  return nil
end
local id = redis.call('HGET', KEYS[2], ARGV[2])
if not id then
  id = ARGV[3]
  redis.call('HSET', KEYS[2], ARGV[2], id)
  redis.call('HSET', ARGV[7] .. ':digest:' .. id, 'key', ARGV[2], 'opened', ARGV[4], 'takes', 0)
  local due = string.format('%.0f', tonumber(ARGV[4]) + tonumber(ARGV[5]))
  redis.call('ZADD', KEYS[3], due, id)
end
local count = redis.call('RPUSH', ARGV[7] .. ':digest:' .. id .. ':members', ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], id)
redis.call('ZREM', KEYS[5], ARGV[1])
if count >= tonumber(ARGV[6]) then
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[4], id)
end
return id
