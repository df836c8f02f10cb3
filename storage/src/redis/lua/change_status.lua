-- Lua shared by the status scripts: one status change of the event whose
-- id's 16 bytes are `bytes`, with its status index entry, its user's inbox
-- indexes (a change into or out of PROCESSED), its notification entry (the
-- id, `change`: the new status, time and trace, and `unread`: the user's
-- unread count, when the change moved it) and
-- (entering a status that enqueues) its queue entry, as the create script
-- writes them. `target` and `sources` are status codes (see record.rs),
-- `now` is updated_at as the head holds it, `trace` a packed traceparent
-- ('' keeps the record's). Reads the record once and writes it back with
-- the new head. Returns {outcome, detail}: {'missing', ''}, {'same', the
-- record}, {'forbidden', current status code} or {'changed', the record as
-- it is now}.
local STATUS_NAMES = {['1'] = 'PENDING', ['2'] = 'PROCESSED', ['3'] = 'OPENED', ['4'] = 'FAILED'}
local function change_status(queue, notifications, record_key, bytes, prefix, now, max_len,
                             target, enqueue, sources, trace)
  local record = redis.call('GET', record_key)
  if not record then
    return {'missing', ''}
  end
  local current = string.sub(record, 1, 1)
  if current == target then
    return {'same', record}
  elseif not string.find(sources, current, 1, true) then
    return {'forbidden', current}
  end
  if trace == '' then trace = string.sub(record, 26, 50) end
  record = target .. now .. string.sub(record, 10, 25) .. trace .. string.sub(record, 51)
  redis.call('SET', record_key, record)
  -- The index score is occurred_at (head bytes 17..25), as the create wrote it.
  local score = string.format('%.0f', struct.unpack('>i8', record, 18))
  redis.call('ZREM', prefix .. ':idx:status:' .. STATUS_NAMES[current], bytes)
  redis.call('ZADD', prefix .. ':idx:status:' .. STATUS_NAMES[target], score, bytes)
  if enqueue == '1' then redis.call('XADD', queue, '*', 'id', bytes) end
  -- The user's inbox (PROCESSED or OPENED) and unread (PROCESSED) indexes;
  -- the user id is the first line of the record's `ix`.
  local entry = {'id', bytes, 'change', target .. now .. trace}
  if target == '2' or current == '2' then
    local ix = string.sub(record, 53, 52 + struct.unpack('>I2', record, 51))
    local user = string.match(ix, '^[^\n]*')
    local unread = prefix .. ':idx:unread:' .. user
    if target == '2' then
      redis.call('ZADD', prefix .. ':idx:inbox:' .. user, score, bytes)
      redis.call('ZADD', unread, score, bytes)
    else
      redis.call('ZREM', unread, bytes)
    end
    entry[5], entry[6] = 'unread', redis.call('ZCARD', unread)
  end
  redis.call('XADD', notifications, 'MAXLEN', '~', max_len, '*', unpack(entry))
  return {'changed', record}
end
