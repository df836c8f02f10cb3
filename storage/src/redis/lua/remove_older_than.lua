-- One slice of retention among one partition's events in one settled
-- status. KEYS: that status's index in the partition (which also routes
-- the script to the partition's node). ARGV: the partition's key prefix,
-- the cutoff (micros), how many of the oldest candidates to skip, the most
-- to look at. Looks at the events that occurred before the cutoff, oldest
-- first, and removes each that was also created before it and is not
-- PENDING: its record, its delivery attempts, its index entries, its
-- note in the dead-letter index and, if it was unread (PROCESSED), its
-- share of its user's unread count. An index entry whose record is gone
-- goes too. Index members are ids' 16 bytes; records (see record.rs) are
-- keyed by the id's 32 hex digits, the dead-letter index by the id's text.
-- Returns {removed, kept, scanned}.
local function hex(bytes)
  return (string.gsub(bytes, '.', function(c) return string.format('%02x', string.byte(c)) end))
end
local function id_text(bytes)
  local h = hex(bytes)
  return string.sub(h, 1, 8) .. '-' .. string.sub(h, 9, 12) .. '-' .. string.sub(h, 13, 16)
    .. '-' .. string.sub(h, 17, 20) .. '-' .. string.sub(h, 21, 32)
end
local prefix, cutoff = ARGV[1], tonumber(ARGV[2])
local index = KEYS[1]
local ids = redis.call('ZRANGE', index, '-inf', '(' .. ARGV[2], 'BYSCORE', 'LIMIT', ARGV[3], ARGV[4])
local removed, kept = 0, 0
for _, bytes in ipairs(ids) do
  local key = prefix .. ':event:' .. hex(bytes)
  local record = redis.call('GET', key)
  if not record then
    redis.call('ZREM', index, bytes)
  elseif string.sub(record, 1, 1) == '1' or struct.unpack('>i8', record, 10) >= cutoff then
    kept = kept + 1
  else
    redis.call('ZREM', index, bytes)
    -- `ix`: the user id, then `kind:value` lines.
    local ix = string.sub(record, 53, 52 + struct.unpack('>I2', record, 51))
    local kind = ':idx:user:'
    for line in string.gmatch(ix, '[^\n]+') do
      if kind == ':idx:user:' and string.sub(record, 1, 1) == '2' then
        if redis.call('HINCRBY', prefix .. ':unread', line, -1) <= 0 then
          redis.call('HDEL', prefix .. ':unread', line)
        end
      end
      redis.call('ZREM', prefix .. kind .. line, bytes)
      kind = ':idx:'
    end
    redis.call('DEL', key, prefix .. ':attempts:' .. hex(bytes))
    redis.call('HDEL', prefix .. ':dead:index', id_text(bytes))
    removed = removed + 1
  end
end
return {removed, kept, #ids}
