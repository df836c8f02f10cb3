-- Gives up a queue entry: adds it to the partition's dead letters, notes the
-- dead letter under its event in the dead-letter index, and acknowledges the
-- entry, atomically. KEYS: dead letters, dead-letter index, queue. ARGV: the
-- consumer group, the queue entry id, the event id, then the dead letter's
-- field/value pairs. Returns the dead letter's id.
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
local noted = redis.call('HGET', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], noted and (noted .. ' ' .. id) or id)
redis.call('XACK', KEYS[3], ARGV[1], ARGV[2])
return id
