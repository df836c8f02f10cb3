-- Records delivery attempts of one partition's events. KEYS: for each
-- attempt, its event's record and its event's attempts list. ARGV: the most
-- attempts kept per event, then for each attempt its bytes and what its
-- success appends to the record (a `delivered` item of the record's
-- protobuf part; empty for a failure). An attempt of an event whose record
-- is gone is dropped, so no list outlives its record. Returns how many
-- attempts were recorded.
local keep = tonumber(ARGV[1])
local recorded = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('RPUSH', KEYS[i + 1], ARGV[i + 1]) > keep then
      redis.call('LTRIM', KEYS[i + 1], -keep, -1)
    end
    if ARGV[i + 2] ~= '' then
      redis.call('APPEND', KEYS[i], ARGV[i + 2])
    end
    recorded = recorded + 1
  end
end
return recorded
