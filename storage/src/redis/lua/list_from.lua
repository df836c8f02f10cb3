-- Where a resumed ListEvents page starts in a query index, and its first
-- entries. KEYS: the index (a sorted set: members are event ids' 16 bytes,
-- scores occurred_at in micros). ARGV: the page token's score and id bytes,
-- '1' to walk newest first, how many entries to return. Entries of one
-- score (a tie group) are ordered by their members' bytes, so the token's
-- place inside its group is found by binary search over ranks: resuming
-- costs O(log n) whatever the group's size, not a walk from its start.
-- Returns the rank (in the walk's order) of the first entry past the token,
-- then up to that many entries from there, with their scores.
local key, score, id = KEYS[1], ARGV[1], ARGV[2]
local newest_first, count = ARGV[3] == '1', tonumber(ARGV[4])

-- Whether `member` sorts after `id`, byte by byte (Lua's `<` on strings
-- follows the locale, which need not be byte order).
local function after(member)
  for i = 1, math.min(#member, #id) do
    local a, b = string.byte(member, i), string.byte(id, i)
    if a ~= b then return a > b end
  end
  return #member > #id
end

local below = redis.call('ZCOUNT', key, '-inf', '(' .. score)
local ties = redis.call('ZCOUNT', key, score, score)
-- The first place in the group whose member is past the token: after it
-- (oldest first), or at or after it (newest first, which walks below it).
local lo, hi = 0, ties
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local member = redis.call('ZRANGE', key, below + mid, below + mid)[1]
  local past
  if newest_first then
    past = member == id or after(member)
  else
    past = after(member)
  end
  if past then hi = mid else lo = mid + 1 end
end
local start = below + lo
if newest_first then
  start = redis.call('ZCARD', key) - start
end
if count < 1 then return {start, {}} end
local entries
if newest_first then
  entries = redis.call('ZRANGE', key, start, start + count - 1, 'REV', 'WITHSCORES')
else
  entries = redis.call('ZRANGE', key, start, start + count - 1, 'WITHSCORES')
end
return {start, entries}
