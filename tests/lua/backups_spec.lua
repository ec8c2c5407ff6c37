-- policies/backups.lua: the spec's Backup Strategy (24 h / 7 d / 5 min shared,
-- 6 h / 30 d / 1 min dedicated, manual 90 d).
local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
local H = dofile(here .. "/policy_helper.lua")
local B = H.load("backups")

local HOUR, DAY = 3600, 86400
local T0 = 1767225600 -- 2026-01-01T00:00:00Z

local function auto(at, status)
  return { backup_type = "automatic", status = status or "completed", completed_at = at }
end

local function schedule(tier, now, backups, plan)
  local out = B.schedule({ tier = tier, now = now, backups = backups or {}, plan = plan })
  H.assert_contract("backups", "schedule", out)
  return out
end

local function expiry(kind, tier, at, plan)
  local out = B.expiry({ backup_type = kind, tier = tier, completed_at = at, plan = plan })
  H.assert_contract("backups", "expiry", out)
  return out.expires_at
end

describe("backups.schedule", function()
  it("is due when there is no backup yet", function()
    H.assert_equal({ due = true, next_at = T0, interval_hours = 24, retention_days = 7,
                     pitr_window_minutes = 5, expires_at = T0 + 7 * DAY }, schedule("shared", T0))
  end)

  it("shared: due at exactly 24 h, not at 24 h - 1 s", function()
    local early = schedule("shared", T0 + 24 * HOUR - 1, { auto(T0) })
    assert.is_false(early.due)
    assert.are.equal(T0 + 24 * HOUR, early.next_at)
    local on_time = schedule("shared", T0 + 24 * HOUR, { auto(T0) })
    assert.is_true(on_time.due)
    assert.are.equal(T0 + 24 * HOUR, on_time.next_at)
  end)

  it("dedicated: due at exactly 6 h, not at 6 h - 1 s", function()
    assert.is_false(schedule("dedicated", T0 + 6 * HOUR - 1, { auto(T0) }).due)
    assert.is_true(schedule("dedicated", T0 + 6 * HOUR, { auto(T0) }).due)
    assert.are.equal(T0 + 6 * HOUR, schedule("dedicated", T0 + 1, { auto(T0) }).next_at)
  end)

  it("uses the spec's tier defaults: 24 h/7 d/5 min shared, 6 h/30 d/1 min dedicated", function()
    local s, d = schedule("shared", T0), schedule("dedicated", T0)
    assert.are.same({ 24, 7, 5 }, { s.interval_hours, s.retention_days, s.pitr_window_minutes })
    assert.are.same({ 6, 30, 1 }, { d.interval_hours, d.retention_days, d.pitr_window_minutes })
    assert.are.equal(T0 + 7 * DAY, s.expires_at)
    assert.are.equal(T0 + 30 * DAY, d.expires_at)
  end)

  it("counts only completed automatic backups, the latest one", function()
    local backups = {
      auto(T0),
      auto(T0 + 20 * HOUR, "failed"),
      auto(T0 + 21 * HOUR, "in_progress"),
      { backup_type = "manual", status = "completed", completed_at = T0 + 22 * HOUR },
      { backup_type = "pre_delete", status = "completed", completed_at = T0 + 23 * HOUR },
      auto(T0 + 2 * HOUR),
    }
    local out = schedule("shared", T0 + 25 * HOUR, backups)
    assert.is_false(out.due)
    assert.are.equal(T0 + 26 * HOUR, out.next_at)
    assert.is_true(schedule("shared", T0 + 26 * HOUR, backups).due)
  end)

  it("lets plan fields override the tier, field by field", function()
    local out = schedule("shared", T0 + 6 * HOUR, { auto(T0) }, { backup_interval_hours = 6 })
    assert.is_true(out.due)
    assert.are.same({ 6, 7, 5 }, { out.interval_hours, out.retention_days, out.pitr_window_minutes })
    out = schedule("dedicated", T0, {}, { backup_retention_days = 14, pitr_window_minutes = 2 })
    assert.are.same({ 6, 14, 2 }, { out.interval_hours, out.retention_days, out.pitr_window_minutes })
    assert.are.equal(T0 + 14 * DAY, out.expires_at)
  end)

  it("answers integers even when the plan carries floats", function()
    local out = schedule("shared", T0, {}, { backup_interval_hours = 12.0 })
    assert.are.equal("integer", math.type(out.interval_hours))
    assert.are.equal(12, out.interval_hours)
  end)

  it("refuses an unknown tier", function()
    assert.has_error(function() B.schedule({ tier = "gold", now = T0, backups = {} }) end)
  end)
end)

describe("backups.expiry", function()
  it("keeps automatic backups 7 days on shared and 30 days on dedicated", function()
    assert.are.equal(T0 + 7 * DAY, expiry("automatic", "shared", T0))
    assert.are.equal(T0 + 30 * DAY, expiry("automatic", "dedicated", T0))
  end)

  it("keeps manual backups 90 days (spec: INTERVAL '90 days'), whatever the tier", function()
    assert.are.equal(T0 + 90 * DAY, expiry("manual", "shared", T0))
    assert.are.equal(T0 + 90 * DAY, expiry("manual", "dedicated", T0))
    assert.are.equal(T0 + 90 * DAY, expiry("manual", "shared", T0, { backup_retention_days = 3 }))
  end)

  it("keeps the final pre_delete backup 90 days", function()
    assert.are.equal(T0 + 90 * DAY, expiry("pre_delete", "shared", T0))
    assert.are.equal(T0 + 90 * DAY, expiry("pre_delete", "dedicated", T0))
  end)

  it("follows the plan's retention for automatic backups", function()
    assert.are.equal(T0 + 10 * DAY, expiry("automatic", "shared", T0, { backup_retention_days = 10 }))
  end)

  it("refuses an unknown backup type", function()
    assert.has_error(function()
      B.expiry({ backup_type = "weekly", tier = "shared", completed_at = T0 })
    end)
  end)

  it("passes its own examples", function()
    H.assert_examples("backups")
  end)

  it("is pure: no globals, no state, input untouched", function()
    H.assert_pure("backups")
  end)
end)
