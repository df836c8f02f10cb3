-- Redrives events of one partition: each goes back to PENDING (and onto the
-- queue) on its own, and once it is PENDING its dead letters go. KEYS:
-- queue, notifications, dead letters, the dead-letter index (event id to
-- the ids of its dead letters), then one record key per event. ARGV:
-- updated_at (as the record's head holds it), notifications max length,
-- the partition's key prefix, the codes of the statuses PENDING may come
-- from, then per event its id, the id's 16 bytes and its packed
-- traceparent. Returns per event {outcome, detail} (see change_status).
local out = {}
for i = 5, #KEYS do
  local a = 5 + (i - 5) * 3
  local id = ARGV[a]
  local result = change_status(KEYS[1], KEYS[2], KEYS[i], ARGV[a + 1], ARGV[3], ARGV[1],
                               ARGV[2], '1', '1', ARGV[4], ARGV[a + 2])
  if result[1] == 'changed' or result[1] == 'same' then
    local dead = redis.call('HGET', KEYS[4], id)
    if dead then
      for entry in string.gmatch(dead, '%S+') do redis.call('XDEL', KEYS[3], entry) end
      redis.call('HDEL', KEYS[4], id)
    end
  end
  out[#out + 1] = result
end
counts_flush(ARGV[3] .. ':counts')
return out
