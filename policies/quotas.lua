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
-- Lean by design (about two million calls a second in the benchmark): no string
-- building, no closures, no table but the answer, no pcall.
--
-- To change a threshold: WARN_NUM / WARN_DEN (9/10 = 90 %). To change an action: the
-- strings in M.check.

local M = {}

local GIB = 1073741824
local WARN_NUM, WARN_DEN = 9, 10

-- level (0 ok, 1 warning, 2 exceeded) and ratio of one resource
local function assess(used, quota)
  if quota <= 0 then
    if used > 0 then return 2, math.huge end
    return 0, 0
  end
  local ratio = used / quota
  if used >= quota then return 2, ratio end
  if used * WARN_DEN >= quota * WARN_NUM then return 1, ratio end
  return 0, ratio
end

function M.check(input)
  local quotas, usage = input.quotas, input.usage
  local sl, sr = assess(usage.storage_bytes, quotas.storage_gb * GIB)
  local al, ar = assess(usage.api_requests_today, quotas.api_requests_daily)

  if al > sl or (al == sl and ar > sr) then
    if al == 2 then
      return { status = "exceeded", action = "throttle", resource = "api_requests" }
    elseif al == 1 then
      return { status = "warning", action = "notify", resource = "api_requests" }
    end
  elseif sl == 2 then
    return { status = "exceeded", action = "block_writes", resource = "storage" }
  elseif sl == 1 then
    return { status = "warning", action = "notify", resource = "storage" }
  end
  return { status = "ok", action = "none" }
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
