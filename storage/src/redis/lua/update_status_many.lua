-- Applies a batch of status changes of one partition, each on its own.
-- KEYS: queue, notifications, then one record key per change. ARGV:
-- updated_at (as the record's head holds it), notifications max length,
-- the partition's key prefix, then per change: new status code, '1' to
-- enqueue, the codes of the statuses it may come from, its packed
-- traceparent ('' keeps the record's) and the event id's 16 bytes.
-- Returns per change {outcome, detail} (see change_status).
local out = {}
for i = 3, #KEYS do
  local a = 4 + (i - 3) * 5
  out[#out + 1] = change_status(KEYS[1], KEYS[2], KEYS[i], ARGV[a + 4], ARGV[3], ARGV[1],
                                ARGV[2], ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
counts_flush(ARGV[3] .. ':counts')
return out
