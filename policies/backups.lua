-- backups.lua: when an instance's next automatic backup is due, and when a backup expires.
--
-- M.schedule(input) -> { due = boolean, next_at = integer, interval_hours = integer > 0,
--                        retention_days = integer > 0, pitr_window_minutes = integer > 0,
--                        expires_at = integer }
--   input:
--     tier     "shared"|"dedicated"
--     plan     { backup_interval_hours, backup_retention_days, pitr_window_minutes }
--              optional, and so is each field: a present positive number overrides
--              the tier's default
--     backups  array of { backup_type = string, status = string, completed_at = integer }
--              (may be empty); only completed automatic backups count
--     now      integer unix seconds
--
-- M.expiry(input) -> { expires_at = integer }
--   input: { backup_type = "automatic"|"manual"|"pre_delete", tier, plan (optional),
--            completed_at = integer unix seconds }
--
-- Rules and where the numbers come from (spec, "Backup Strategy"):
--   * shared:    "Automated snapshots every 24 hours", "Retention: 7 days",
--                "Point-in-time recovery: 5 minutes"
--   * dedicated: "Automated snapshots every 6 hours (Professional+)",
--                "Retention: 30 days", "Point-in-time recovery: 1 minute"
--     The schedule is a property of the tier (Professional is on the shared tier, see
--     docs/schema.md); a plan's own backup_* columns override it.
--   * due when no completed automatic backup exists, or now - latest completed_at >=
--     interval: a backup exactly one interval old is due. next_at = now when due,
--     else latest + interval.
--   * schedule.expires_at = now + retention: the expiry a backup taken now would get.
--   * expiry: automatic -> completed_at + retention days; manual -> + 90 days (spec:
--     "expires_at = CURRENT_TIMESTAMP + INTERVAL '90 days'"); pre_delete, the final
--     backup before an instance is deleted -> + 90 days (our default: kept like a
--     manual one, long enough to undo a deletion).
--   * An unknown tier or backup type is an error, never a guess.
--
-- To change a number: TIERS or KEEP_DAYS below, or the plan's backup_* columns.

local M = {}

local HOUR, DAY = 3600, 86400

local TIERS = {
  shared    = { interval_hours = 24, retention_days = 7,  pitr_window_minutes = 5 },
  dedicated = { interval_hours = 6,  retention_days = 30, pitr_window_minutes = 1 },
}

-- days a backup of each type is kept; automatic backups follow the tier (nil here)
local KEEP_DAYS = { manual = 90, pre_delete = 90 }

-- the plan's value when it is a positive number, else the tier's
local function setting(plan, field, default)
  local v = plan and plan[field]
  if type(v) == "number" and v >= 1 then return math.floor(v) end
  return default
end

-- interval_hours, retention_days, pitr_window_minutes for a tier and plan
local function settings(tier, plan)
  local t = TIERS[tier]
  if t == nil then error("unknown tier '" .. tostring(tier) .. "'") end
  return setting(plan, "backup_interval_hours", t.interval_hours),
         setting(plan, "backup_retention_days", t.retention_days),
         setting(plan, "pitr_window_minutes", t.pitr_window_minutes)
end

function M.schedule(input)
  local interval, retention, pitr = settings(input.tier, input.plan)
  local now = math.floor(input.now)

  local latest = nil
  for _, b in ipairs(input.backups or {}) do
    if b.backup_type == "automatic" and b.status == "completed" and b.completed_at
       and (latest == nil or b.completed_at > latest) then
      latest = b.completed_at
    end
  end

  local due = latest == nil or now - latest >= interval * HOUR
  return {
    due = due,
    next_at = due and now or math.floor(latest) + interval * HOUR,
    interval_hours = interval,
    retention_days = retention,
    pitr_window_minutes = pitr,
    expires_at = now + retention * DAY,
  }
end

function M.expiry(input)
  local days = KEEP_DAYS[input.backup_type]
  if days == nil then
    if input.backup_type ~= "automatic" then
      error("unknown backup_type '" .. tostring(input.backup_type) .. "'")
    end
    local _, retention = settings(input.tier, input.plan)
    days = retention
  end
  return { expires_at = math.floor(input.completed_at) + days * DAY }
end

M.examples = {
  { fn = "schedule",
    input = { tier = "shared", now = 1767312000,
              backups = { { backup_type = "automatic", status = "completed",
                            completed_at = 1767225600 } } },
    output = { due = true, next_at = 1767312000, interval_hours = 24, retention_days = 7,
               pitr_window_minutes = 5, expires_at = 1767916800 } },
  -- edge: one second before 24 hours, not due yet
  { fn = "schedule",
    input = { tier = "shared", now = 1767311999,
              backups = { { backup_type = "automatic", status = "completed",
                            completed_at = 1767225600 } } },
    output = { due = false, next_at = 1767312000, interval_hours = 24, retention_days = 7,
               pitr_window_minutes = 5, expires_at = 1767916799 } },
  { fn = "schedule",
    input = { tier = "dedicated", now = 1767312000, backups = {} },
    output = { due = true, next_at = 1767312000, interval_hours = 6, retention_days = 30,
               pitr_window_minutes = 1, expires_at = 1769904000 } },
  { fn = "expiry",
    input = { backup_type = "manual", tier = "shared", completed_at = 1767225600 },
    output = { expires_at = 1775001600 } },
  { fn = "expiry",
    input = { backup_type = "automatic", tier = "dedicated", completed_at = 1767225600 },
    output = { expires_at = 1769817600 } },
}

return M
