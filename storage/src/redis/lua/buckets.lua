-- Lua shared by the scripts that keep a status index in buckets (the
-- statuses events stay in: PROCESSED, OPENED, FAILED, CANCELLED). Such an
-- index `index` (`{p}:idx:status:NAME`) is sorted sets of at most
-- BUCKET_MAX entries, which Redis keeps as compact listpacks (about 30
-- bytes an entry instead of a skip list's 125), each holding the scores
-- from its start up to the next one's: the directory `index:dir` is a
-- sorted set of the starts (member the start as text, scored by it), and
-- the bucket starting at `s` is `index:s`. The first bucket starts at
-- -inf. A full bucket is split before an entry is
-- added (see bucket_split); a bucket of one score cannot be split and
-- grows past the limit.
-- An emptied bucket leaves the directory (its range joins the one
-- before). Members are event ids' 16 bytes, scores occurred_at in micros.
local BUCKET_MAX = 128

-- What this run of the script knows of each index's last bucket (the one
-- most entries go to: the newest events'): its start (a number), key and
-- size, so that a batch's later entries there need no lookup; and the
-- changes of the statuses' counts, written once at the end (counts_flush).
local LAST, COUNTED = {}, {}

-- The start of the bucket of `index` holding `score`, or nil if the index
-- has none.
local function bucket_start(index, score)
  return redis.call('ZRANGE', index .. ':dir', score, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1)[1]
end

-- The key and size of the bucket of `index` that `score` belongs to (which
-- exists, or is made: the first starts at -inf), through what LAST knows.
local function bucket_for(index, score)
  local last = LAST[index]
  if last and tonumber(score) >= last.from then return last end
  local dir = index .. ':dir'
  local start = redis.call('ZRANGE', dir, '+inf', '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1)[1]
  if not start then
    start = '-inf'
    redis.call('ZADD', dir, start, start)
  end
  local is_last = tonumber(score) >= tonumber(start)
  if not is_last then start = bucket_start(index, score) end
  local key = index .. ':' .. start
  local bucket = {from = tonumber(start), key = key, size = redis.call('ZCARD', key)}
  if is_last then LAST[index] = bucket end
  return bucket
end

-- Splits the full bucket `key` of `index` before `score` is added to it;
-- returns the key of the bucket `score` then belongs to. A score past
-- every entry (the usual case: the newest event) starts a bucket of its
-- own, so buckets filled in order stay full and nothing moves; any other
-- splits the bucket at its middle score (or past its first tie group, if
-- that reaches the middle), and a bucket of one tie group is not split.
local function bucket_split(index, key, score)
  if tonumber(score) > tonumber(redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]) then
    redis.call('ZADD', index .. ':dir', score, score)
    return index .. ':' .. score
  end
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
  local at = redis.call('ZRANGE', key, BUCKET_MAX / 2, BUCKET_MAX / 2, 'WITHSCORES')[2]
  if at == first then
    at = redis.call('ZRANGE', key, '(' .. first, '+inf', 'BYSCORE', 'LIMIT', 0, 1, 'WITHSCORES')[2]
    if not at then return key end
  end
  local moved = redis.call('ZRANGE', key, at, '+inf', 'BYSCORE', 'WITHSCORES')
  local args = {}
  for i = 1, #moved, 2 do
    args[i], args[i + 1] = moved[i + 1], moved[i]
  end
  local upper = index .. ':' .. at
  redis.call('ZADD', upper, unpack(args))
  redis.call('ZREMRANGEBYSCORE', key, at, '+inf')
  redis.call('ZADD', index .. ':dir', at, at)
  if tonumber(score) >= tonumber(at) then return upper end
  return key
end

-- Adds `member` at `score` to the bucketed index `index`.
local function bucket_add(index, score, member)
  local bucket = bucket_for(index, score)
  local key = bucket.key
  if bucket.size >= BUCKET_MAX then
    key = bucket_split(index, key, score)
    -- Where the index's buckets now start is read again when needed.
    LAST[index] = nil
  end
  redis.call('ZADD', key, score, member)
  bucket.size = bucket.size + 1
end

-- Takes the emptied bucket starting at `start` (not the first) out of the
-- directory of `index`.
local function bucket_drop_if_empty(index, start)
  if start ~= '-inf' and redis.call('EXISTS', index .. ':' .. start) == 0 then
    redis.call('ZREM', index .. ':dir', start)
  end
end

-- Removes `member` (at `score`) from the bucketed index `index`.
local function bucket_remove(index, score, member)
  LAST[index] = nil
  local start = bucket_start(index, score)
  if start then
    redis.call('ZREM', index .. ':' .. start, member)
    bucket_drop_if_empty(index, start)
  end
end

-- Moves the count of status `name` by `delta`, in counts_flush.
local function count(name, delta)
  COUNTED[name] = (COUNTED[name] or 0) + delta
end

-- Writes the counts' changes to the partition's `counts` hash; every
-- script that counts calls it before it returns.
local function counts_flush(counts)
  for name, delta in pairs(COUNTED) do
    if delta ~= 0 then redis.call('HINCRBY', counts, name, delta) end
  end
  COUNTED = {}
end
