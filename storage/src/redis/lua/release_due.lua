-- Queues the due events of one partition's schedule (after
-- change_status.lua). KEYS: queue, notifications, schedule, lease. ARGV:
-- the due cutoff (micros), the most to move, this mover's name, the lease
-- in milliseconds, updated_at (as the record's head holds it), the
-- notifications max length, the partition's key prefix. Another mover
-- holding the lease: returns nil, moving nothing. Else takes (or renews)
-- the lease and moves the earliest due events, each from SCHEDULED to
-- PENDING as a status change does (its queue and notification entries;
-- change_status takes it off the schedule); one that is gone or no longer
-- SCHEDULED only leaves the schedule. Returns the moved ones' id bytes
-- and due scores, flat.
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[3] then
  return nil
end
redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
local prefix = ARGV[7]
local due = redis.call('ZRANGE', KEYS[3], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, ARGV[2], 'WITHSCORES')
local out = {}
for i = 1, #due, 2 do
  local bytes, score = due[i], due[i + 1]
  local hex = string.gsub(bytes, '.', function(c) return string.format('%02x', string.byte(c)) end)
  local result = change_status(KEYS[1], KEYS[2], prefix .. ':event:' .. hex, bytes, prefix,
                               ARGV[5], ARGV[6], '1', '1', '5', '')
  if result[1] == 'changed' then
    out[#out + 1] = bytes
    out[#out + 1] = score
  else
    redis.call('ZREM', KEYS[3], bytes)
  end
end
counts_flush(prefix .. ':counts')
return out
