-- quotas.lua: is an instance within its storage and API-request quotas, and what to do
-- when it is not.
--
-- M.check(input) -> verdict           (hot path: called for every metered request)
--
-- input (all four fields required, integers):
--   quotas { storage_gb = integer >= 0, api_requests_daily = integer >= 0 }
--   usage  { storage_bytes = integer >= 0, api_requests_today = integer >= 0 }
--
-- output:
--   { status = "ok"|"warning"|"exceeded",
--     action = "none"|"notify"|"throttle"|"block_writes",
--     resource = "storage"|"api_requests" }        -- resource absent when status is "ok"
--
-- Rules and where the numbers come from:
--   * ratio = usage / quota per resource; the storage quota in bytes is
--     storage_gb * 1073741824, as the spec's "Find instances approaching quota":
--       "i.storage_used_bytes > i.storage_quota_gb * 1073741824 * 0.9"
--     A quota of 0 is a ratio of 0 while usage is 0, else exceeded.
--   * ratio >= 1.0 -> "exceeded"; ratio >= 0.9 -> "warning"; else "ok". The 0.9 is the
--     spec's ("* 0.9" in the query above). The spec lists strictly more than 90 %; we
--     warn at exactly 90 % too (our default: a warning one request early costs nothing).
--     Both thresholds are compared exactly in integers (usage * 10 >= quota * 9), so
--     89.9 % is ok, 90 % warning, 100 % exceeded, with no floating-point rounding.
--   * The worse resource decides: the higher status, then the higher ratio; ties go to
--     storage (our default: storage is the harder limit to recover from).
--   * action: ok -> "none", warning -> "notify", exceeded storage -> "block_writes"
--     (reads and deletes keep working so the customer can get under quota), exceeded
--     api_requests -> "throttle". Our defaults: the spec says only that quotas exist.
--
-- Lean by design (over two million calls a second through the engine): no string
-- building, no closures, no pcall, and no new table at all: the five possible answers
-- are made once, below, and shared. Callers only read an answer (the engine copies it
-- out); one that wants to change it must copy it first.
--
-- To change a threshold: WARN_NUM / WARN_DEN (9/10 = 90 %). To change an action: the
-- strings in M.check.

local M = {}

local GIB = 1073741824
local WARN_NUM, WARN_DEN = 9, 10

local OK = { status = "ok", action = "none" }
local API_EXCEEDED = { status = "exceeded", action = "throttle", resource = "api_requests" }
local API_WARNING = { status = "warning", action = "notify", resource = "api_requests" }
local STORAGE_EXCEEDED = { status = "exceeded", action = "block_writes", resource = "storage" }
local STORAGE_WARNING = { status = "warning", action = "notify", resource = "storage" }

function M.check(input)
  local quotas, usage = input.quotas, input.usage
  local s_used, s_quota = usage.storage_bytes, quotas.storage_gb * GIB
  local a_used, a_quota = usage.api_requests_today, quotas.api_requests_daily

  -- Level of each resource: 0 ok, 1 warning, 2 exceeded (inlined: this runs for every
  -- metered request, and a Lua call costs more than the comparisons).
  local sl, al
  if s_quota <= 0 then sl = s_used > 0 and 2 or 0
  elseif s_used >= s_quota then sl = 2
  elseif s_used * WARN_DEN >= s_quota * WARN_NUM then sl = 1
  else sl = 0 end
  if a_quota <= 0 then al = a_used > 0 and 2 or 0
  elseif a_used >= a_quota then al = 2
  elseif a_used * WARN_DEN >= a_quota * WARN_NUM then al = 1
  else al = 0 end

  -- The worse resource decides; at equal levels the higher ratio, ties to storage.
  local api
  if al ~= sl then api = al > sl
  elseif al == 0 then return OK
  elseif s_quota <= 0 then api = false
  elseif a_quota <= 0 then api = true
  else api = a_used / a_quota > s_used / s_quota end

  if api then
    if al == 2 then return API_EXCEEDED end
    return API_WARNING
  end
  if sl == 2 then return STORAGE_EXCEEDED end
  if sl == 1 then return STORAGE_WARNING end
  return OK
end

M.examples = {
  { fn = "check",
    input = { quotas = { storage_gb = 10, api_requests_daily = 100000 },
              usage = { storage_bytes = 123, api_requests_today = 456 } },
    output = { status = "ok", action = "none" } },
  -- edge: exactly 90 % of the daily requests is a warning
  { fn = "check",
    input = { quotas = { storage_gb = 10, api_requests_daily = 100000 },
              usage = { storage_bytes = 0, api_requests_today = 90000 } },
    output = { status = "warning", action = "notify", resource = "api_requests" } },
  -- edge: exactly 100 % of storage blocks writes
  { fn = "check",
    input = { quotas = { storage_gb = 10, api_requests_daily = 100000 },
              usage = { storage_bytes = 10737418240, api_requests_today = 0 } },
    output = { status = "exceeded", action = "block_writes", resource = "storage" } },
  { fn = "check",
    input = { quotas = { storage_gb = 1, api_requests_daily = 0 },
              usage = { storage_bytes = 0, api_requests_today = 1 } },
    output = { status = "exceeded", action = "throttle", resource = "api_requests" } },
}

return M
