-- The replicas of the master holding KEYS[1] (any key of a partition)
-- that are online, as INFO replication counts them.
local info = redis.call('INFO', 'replication')
local online = 0
for line in string.gmatch(info, '[^\r\n]+') do
  if string.match(line, '^slave%d+:') and string.find(line, 'state=online', 1, true) then
    online = online + 1
  end
end
return online
