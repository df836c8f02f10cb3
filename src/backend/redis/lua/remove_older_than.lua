-- One slice of retention among one partition's events in one settled
-- status. KEYS: that status's index in the partition (which also routes
-- the script to the partition's node). ARGV: the partition's key prefix,
-- the cutoff (micros), how
-- many of the oldest candidates to skip, the most to look at. Looks at the
-- events that occurred before the cutoff, oldest first, and removes each that
-- was also created before it and is not PENDING: its record, its index
-- entries and its note in the dead-letter index. An index entry
-- whose record is gone goes too.
-- Returns {removed, kept, scanned}.
-- A record's fields by name.
local function fields_of(record)
  local f = {}
  for j = 1, #record, 2 do f[record[j]] = record[j + 1] end
  return f
end
-- The query indexes (sorted sets scored by occurred_at) an event belongs
-- in: its status's, and one per line of its `ix` field.
local function index_keys(prefix, f)
  local keys = {prefix .. ':idx:status:' .. f.status}
  for line in string.gmatch(f.ix, '[^\n]+') do keys[#keys + 1] = prefix .. ':idx:' .. line end
  return keys
end
local prefix, cutoff = ARGV[1], tonumber(ARGV[2])
local index = KEYS[1]
local ids = redis.call('ZRANGE', index, '-inf', '(' .. ARGV[2], 'BYSCORE', 'LIMIT', ARGV[3], ARGV[4])
local removed, kept = 0, 0
for _, id in ipairs(ids) do
  local record = redis.call('HGETALL', prefix .. ':event:' .. id)
  if #record == 0 then
    redis.call('ZREM', index, id)
  else
    local f = fields_of(record)
    if f.status == 'PENDING' or tonumber(f.created_at) >= cutoff then
      kept = kept + 1
    else
      for _, index in ipairs(index_keys(prefix, f)) do redis.call('ZREM', index, id) end
      redis.call('DEL', prefix .. ':event:' .. id)
      redis.call('HDEL', prefix .. ':dead:index', id)
      removed = removed + 1
    end
  end
end
return {removed, kept, #ids}
