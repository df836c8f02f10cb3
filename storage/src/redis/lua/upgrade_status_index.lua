-- One slice of the upgrade from layout 4 (after buckets.lua): moves the
-- lowest-scored entries of a status index that layout 4 kept as one
-- sorted set into the buckets of layout 5, counting them. KEYS: the old
-- sorted set (whose name the buckets extend), the partition's counts.
-- ARGV: the status's name, the most entries to move. Returns how many
-- moved (0: the old set is gone).
local moved = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
for i = 1, #moved, 2 do
  bucket_add(KEYS[1], moved[i + 1], moved[i])
end
local n = #moved / 2
if n > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 1)
  redis.call('HINCRBY', KEYS[2], ARGV[1], n)
end
return n
