-- Removes one digest and its members' membership (see digests.rs). KEYS:
-- the partition's membership hash, its due digests, its open digests, the
-- digest's hash, its members, the channels that took it. ARGV: the
-- digest's id. Returns how many members it had.
local key = redis.call('HGET', KEYS[4], 'key')
local members = redis.call('LRANGE', KEYS[5], 0, -1)
for _, member in ipairs(members) do
  if redis.call('HGET', KEYS[1], member) == ARGV[1] then
    redis.call('HDEL', KEYS[1], member)
  end
end
if key and redis.call('HGET', KEYS[3], key) == ARGV[1] then
  redis.call('HDEL', KEYS[3], key)
end
redis.call('DEL', KEYS[4], KEYS[5], KEYS[6])
redis.call('ZREM', KEYS[2], ARGV[1])
return #members
