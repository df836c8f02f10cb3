-- Lua shared by the scripts: a record's fields by name, and the query
-- indexes (sorted sets scored by occurred_at) an event belongs in: its
-- status's (together the status indexes hold every event), and one per
-- line of its `ix` field.
local function fields_of(record)
  local f = {}
  for j = 1, #record, 2 do f[record[j]] = record[j + 1] end
  return f
end
local function index_keys(prefix, f)
  local keys = {prefix .. ':idx:status:' .. f.status}
  for line in string.gmatch(f.ix, '[^\n]+') do keys[#keys + 1] = prefix .. ':idx:' .. line end
  return keys
end
-- A record's protobuf bytes: `pb`, then `pb1`, `pb2`, ... (a record keeps
-- each field at most 64 bytes, so Redis stores the hash as a compact
-- listpack).
local function pb_of(f)
  local parts, k = {f.pb}, 1
  while f['pb' .. k] do
    parts[#parts + 1] = f['pb' .. k]
    k = k + 1
  end
  return table.concat(parts)
end
-- The fields of a stream entry of a record with fields `f`, now in `status`.
local function entry_of(f, status, updated_at)
  return {'pb', pb_of(f), 'status', status, 'updated_at', updated_at,
          'traceparent', f.traceparent}
end
