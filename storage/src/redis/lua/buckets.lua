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

-- The start of the bucket of `index` holding `score`, or nil if the index
-- has none.
local function bucket_start(index, score)
  return redis.call('ZRANGE', index .. ':dir', score, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, 1)[1]
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
  local start = bucket_start(index, score)
  if not start then
    start = '-inf'
    redis.call('ZADD', index .. ':dir', start, start)
  end
  local key = index .. ':' .. start
  if redis.call('ZCARD', key) >= BUCKET_MAX then
    key = bucket_split(index, key, score)
  end
  redis.call('ZADD', key, score, member)
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
  local start = bucket_start(index, score)
  if start then
    redis.call('ZREM', index .. ':' .. start, member)
    bucket_drop_if_empty(index, start)
  end
end
