-- Lua shared by the scripts: a record's fields by name, and the query
-- indexes (sorted sets scored by occurred_at) an event belongs in.
local function fields_of(record)
  local f = {}
  for j = 1, #record, 2 do f[record[j]] = record[j + 1] end
  return f
end
local function index_keys(prefix, f)
  local keys = {prefix .. ':idx:all', prefix .. ':idx:user:' .. f.user_id,
                prefix .. ':idx:status:' .. f.status}
  if f.session_id ~= '' then keys[#keys + 1] = prefix .. ':idx:session:' .. f.session_id end
  if f.category ~= '' then keys[#keys + 1] = prefix .. ':idx:category:' .. f.category end
  if f.type ~= '' then keys[#keys + 1] = prefix .. ':idx:type:' .. f.type end
  return keys
end
