-- One slice of retention among one partition's events in one status that
-- is not PENDING (after buckets.lua). KEYS: that status's index in the
-- partition (which also routes the script to the partition's node); for a
-- bucketed status, its directory. ARGV: the partition's key prefix, the
-- cutoff (micros), how many of the oldest candidates to skip, the most to
-- look at, and the status's name if its index is bucketed ('' if it is
-- one sorted set). Looks at the events that occurred before the cutoff,
-- oldest first, and removes each that was also created before it and is
-- not PENDING: its record, its delivery attempts, its index entries (and
-- its share of its status's count), its note in the dead-letter index
-- and, if it was unread (PROCESSED), its share of its user's unread count.
-- An index entry whose record is gone goes too, and so does a bucket left
-- empty. Index members are ids' 16 bytes; records (see record.rs) are
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
local prefix, cutoff, below = ARGV[1], tonumber(ARGV[2]), '(' .. ARGV[2]
local skip, most, status = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
-- The candidates: pairs of the sorted set holding one and its member.
local sets, ids = {}, {}
if status == '' then
  for _, bytes in ipairs(redis.call('ZRANGE', KEYS[1], '-inf', below, 'BYSCORE', 'LIMIT', skip, most)) do
    sets[#sets + 1], ids[#ids + 1] = KEYS[1], bytes
  end
else
  -- The buckets that start before the cutoff, oldest first, a few at a time.
  local index = string.sub(KEYS[1], 1, -5)
  local seen = 0
  while #ids < most do
    local starts = redis.call('ZRANGE', KEYS[1], '-inf', below, 'BYSCORE', 'LIMIT', seen, 16)
    if #starts == 0 then break end
    seen = seen + #starts
    for _, start in ipairs(starts) do
      local key = index .. ':' .. start
      local n = redis.call('ZCOUNT', key, '-inf', below)
      if skip >= n then
        skip = skip - n
      else
        for _, bytes in ipairs(redis.call('ZRANGE', key, '-inf', below, 'BYSCORE', 'LIMIT', skip,
                                          most - #ids)) do
          sets[#sets + 1], ids[#ids + 1] = key, bytes
        end
        skip = 0
        if #ids >= most then break end
      end
    end
  end
end
local function unindex(i)
  redis.call('ZREM', sets[i], ids[i])
  if status ~= '' then count(status, -1) end
end
local removed, kept = 0, 0
for i, bytes in ipairs(ids) do
  local key = prefix .. ':event:' .. hex(bytes)
  local record = redis.call('GET', key)
  if not record then
    unindex(i)
  elseif string.sub(record, 1, 1) == '1' or struct.unpack('>i8', record, 10) >= cutoff then
    kept = kept + 1
  else
    unindex(i)
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
if status ~= '' then
  local index, last = string.sub(KEYS[1], 1, -5), nil
  for _, key in ipairs(sets) do
    if key ~= last then
      bucket_drop_if_empty(index, string.sub(key, #index + 2))
      last = key
    end
  end
end
counts_flush(prefix .. ':counts')
return {removed, kept, #ids}
