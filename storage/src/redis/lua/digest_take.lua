-- Takes the due digests of one partition (see digests.rs). KEYS: the
-- partition's due digests, its open digests. ARGV: now (micros), the most
-- to take, when they are due again if not finished (micros), the
-- partition's key prefix. Each taken digest is sealed (no longer open)
-- and its takes counted. Returns, per digest: its id, key, opened
-- (micros), takes, its members' id bytes run together, and the channels
-- that took it, comma-separated. A due entry of a digest that is gone is
-- dropped.
local ids = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local digest = ARGV[4] .. ':digest:' .. id
  local fields = redis.call('HMGET', digest, 'key', 'opened')
  if not fields[1] then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    if redis.call('HGET', KEYS[2], fields[1]) == id then
      redis.call('HDEL', KEYS[2], fields[1])
    end
    local takes = redis.call('HINCRBY', digest, 'takes', 1)
    local members = redis.call('LRANGE', digest .. ':members', 0, -1)
    local took = redis.call('SMEMBERS', digest .. ':took')
    out[#out + 1] = {id, fields[1], fields[2], takes, table.concat(members),
                     table.concat(took, ',')}
  end
end
return out
