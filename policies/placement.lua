-- placement.lua: which shared server gets a new customer database, and when to open
-- another shared server.
--
-- M.place(input) -> placement
--
-- input:
--   request  { storage_quota_gb = number,    the new database's storage quota (absent: 0)
--              key = string }                what spreads concurrent requests (optional;
--                                            the core passes the new instance's id)
--   servers  array of { id = string, status = string, current_databases = integer,
--                       max_databases = integer, storage_used_gb = number,
--                       storage_total_gb = number }   the shared servers
--   opening  boolean: a new shared server is already being created (absent: false)
--
-- output:
--   { server_id = string or nil,
--     reason = string                      -- only when server_id is nil
--     open_new_server = boolean,
--     new_server = { max_databases = integer > 0, storage_total_gb = number > 0 }
--                                          -- only when open_new_server is true }
--
-- Rules and where the numbers come from:
--   * Candidates: status "active", current_databases < max_databases, and
--     storage_used_gb + request.storage_quota_gb <= storage_total_gb. The spec's step 1:
--       "WHERE status = 'active' AND current_databases < max_databases"
--     plus the storage check, from "Monitor total storage across all databases".
--   * The least loaded candidate wins: "ORDER BY current_databases ASC"; ties go to
--     the lowest storage_used_gb, then the lowest id (our default: deterministic).
--     With a request key, the choice is spread: among the candidates within SPREAD (1)
--     databases of the least loaded, the one the key hashes to (FNV-1a). Our default,
--     for concurrency: when every request picks the one least-loaded server, all of
--     them queue on that server's capacity counter and provision one at a time;
--     spread, they proceed in parallel while the fill stays even (no server more than
--     SPREAD + 1 above the least loaded).
--   * Threshold: "When reaching 80% capacity (120 databases), create new shared RDS".
--     A server is at threshold when count >= ceil(0.8 * max), computed exactly in
--     integers as count * 5 >= max * 4 (120 of 150).
--   * open_new_server is true when opening is false and, counting the chosen server
--     with the new database added, no server remains that is active, below the
--     threshold and able to take another database of this size (also true when no
--     candidate exists). One server at 118 -> placed; at 119 -> placed (it becomes 120)
--     and open; at 120 -> placed and open; at 150 -> not a candidate, open.
--     When opening is true it is false: one new server at a time.
--   * New server: max_databases 150 (spec: "... (up to 150 databases)");
--     storage_total_gb 100 (our default, the schema's default for storage_total_gb;
--     the spec gives no size).
--
-- To change the threshold: THRESHOLD_NUM / THRESHOLD_DEN (4/5 = 80 %). To change the
-- size of new servers: NEW_MAX_DATABASES, NEW_STORAGE_TOTAL_GB.

local M = {}

local THRESHOLD_NUM, THRESHOLD_DEN = 4, 5
local NEW_MAX_DATABASES = 150
local NEW_STORAGE_TOTAL_GB = 100
local NO_ROOM = "no shared server has room"
local SPREAD = 1

-- FNV-1a, 32 bits: a stable, well-spread hash of a string.
local function fnv1a(s)
  local h = 2166136261
  for i = 1, #s do
    h = ((h ~ s:byte(i)) * 16777619) & 0xffffffff
  end
  return h
end

-- Can a server holding `count` databases and `used` GB take one more of `size` GB?
local function has_room(s, count, used, size)
  return s.status == "active" and count < (s.max_databases or 0)
     and used + size <= (s.storage_total_gb or 0)
end

local function below_threshold(count, max)
  return count * THRESHOLD_DEN < max * THRESHOLD_NUM
end

-- Is a better (less loaded) than b? current_databases, storage_used_gb, then id.
local function less_loaded(a, b)
  local ca, cb = a.current_databases or 0, b.current_databases or 0
  if ca ~= cb then return ca < cb end
  local ua, ub = a.storage_used_gb or 0, b.storage_used_gb or 0
  if ua ~= ub then return ua < ub end
  return tostring(a.id) < tostring(b.id)
end

function M.place(input)
  local size = (input.request and input.request.storage_quota_gb) or 0
  local servers = input.servers or {}

  local best = nil
  for _, s in ipairs(servers) do
    if has_room(s, s.current_databases or 0, s.storage_used_gb or 0, size)
       and (best == nil or less_loaded(s, best)) then
      best = s
    end
  end

  -- Spread by the request's key among the near-least-loaded candidates, in id order.
  local key = input.request and input.request.key
  if best and type(key) == "string" then
    local band = {}
    local limit = (best.current_databases or 0) + SPREAD
    for _, s in ipairs(servers) do
      if has_room(s, s.current_databases or 0, s.storage_used_gb or 0, size)
         and (s.current_databases or 0) <= limit then
        band[#band + 1] = s
      end
    end
    table.sort(band, function(a, b) return tostring(a.id) < tostring(b.id) end)
    best = band[fnv1a(key) % #band + 1]
  end

  -- After this placement, is there still a server below threshold that can take
  -- the next database? If not, it is time to open one.
  local room_left = false
  for _, s in ipairs(servers) do
    local count, used = s.current_databases or 0, s.storage_used_gb or 0
    if s == best then
      count, used = count + 1, used + size
    end
    if has_room(s, count, used, size) and below_threshold(count, s.max_databases) then
      room_left = true
      break
    end
  end

  local open = not input.opening and not room_left
  local out = { open_new_server = open }
  if best then
    out.server_id = best.id
  else
    out.reason = NO_ROOM
  end
  if open then
    out.new_server = { max_databases = NEW_MAX_DATABASES, storage_total_gb = NEW_STORAGE_TOTAL_GB }
  end
  return out
end

local function server(id, count, used)
  return { id = id, status = "active", current_databases = count, max_databases = 150,
           storage_used_gb = used, storage_total_gb = 100 }
end

M.examples = {
  -- a key spreads the choice over the servers within one database of the least loaded
  { fn = "place",
    input = { request = { storage_quota_gb = 1, key = "6f040352-c321-432c-91a1-fffef1ac13e6" },
              servers = { server("a", 3, 1), server("b", 4, 1), server("c", 9, 1) }, opening = false },
    output = { server_id = "b", open_new_server = false } },
  { fn = "place",
    input = { request = { storage_quota_gb = 1 },
              servers = { server("b", 40, 20), server("a", 3, 12.5) }, opening = false },
    output = { server_id = "a", open_new_server = false } },
  -- edge: the 120th database reaches 80 % of 150
  { fn = "place",
    input = { request = { storage_quota_gb = 1 }, servers = { server("a", 119, 50) },
              opening = false },
    output = { server_id = "a", open_new_server = true,
               new_server = { max_databases = 150, storage_total_gb = 100 } } },
  { fn = "place",
    input = { request = { storage_quota_gb = 1 }, servers = { server("a", 150, 50) },
              opening = false },
    output = { reason = "no shared server has room", open_new_server = true,
               new_server = { max_databases = 150, storage_total_gb = 100 } } },
  { fn = "place",
    input = { request = { storage_quota_gb = 1 }, servers = {}, opening = true },
    output = { reason = "no shared server has room", open_new_server = false } },
}

return M
