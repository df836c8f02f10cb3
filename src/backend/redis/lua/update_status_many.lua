-- Applies a batch of status changes of one partition, each on its own.
-- KEYS: queue, notifications, then one record key per change. ARGV:
-- updated_at (micros), notifications max length, the partition's key prefix,
-- then per change: new status, '1' to enqueue, the statuses it may come from
-- joined by commas, its traceparent ('' keeps the record's), the event's
-- id and the id's 16 bytes. Returns per change {outcome, detail} (see change_status).
local out = {}
for i = 3, #KEYS do
  local a = 4 + (i - 3) * 6
  out[#out + 1] = change_status(KEYS[1], KEYS[2], KEYS[i], ARGV[a + 4], ARGV[a + 5], ARGV[3],
                                ARGV[1], ARGV[2], ARGV[a], ARGV[a + 1], ARGV[a + 2],
                                ARGV[a + 3])
end
return out
