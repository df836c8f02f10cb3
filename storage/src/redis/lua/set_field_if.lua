-- Sets a field of a hash only if it still holds what the caller read, and
-- only while the hash exists: how a read-modify-write of one field (a
-- recipient's preferences) stays atomic without holding anything.
-- KEYS[1]: the hash. ARGV[1]: the field; ARGV[2]: the value read ('' for
-- none); ARGV[3]: the new value.
-- Returns 1 when set, 0 when the field changed since it was read, -1 when
-- the hash is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local now = redis.call('HGET', KEYS[1], ARGV[1])
if (now or '') ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
