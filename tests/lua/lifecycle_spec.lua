-- policies/lifecycle.lua: payment grace (7 days), quota grace (3 days), suspend/resume.
local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
local H = dofile(here .. "/policy_helper.lua")
local L = H.load("lifecycle")

local DAY = 86400
local NOW = 1767312000
local STATUSES = { "requested", "provisioning", "active", "failed", "suspended", "deleting", "deleted" }

local function event(name, fields)
  local input = { event = name, now = NOW, instance = { status = "active" } }
  for k, v in pairs(fields or {}) do input[k] = v end
  local out = L.on_event(input)
  H.assert_contract("lifecycle", "on_event", out)
  return out
end

local function grace(at) return { status = "past_due", grace_period_ends_at = at } end
local function suspended(reason) return { status = "suspended", status_reason = reason } end
local function over_since(at) return { status = "exceeded", exceeded_since = at } end

describe("lifecycle.on_event payment", function()
  it("starts a 7-day grace on the first failed payment", function()
    H.assert_equal({ action = "notify", reason = "payment_failed", notify = "payment_failed",
                     grace_period_ends_at = NOW + 7 * DAY },
                   event("payment_failed", { subscription = { status = "past_due" } }))
  end)

  it("reminds and keeps the grace while it runs (1 s before the deadline)", function()
    H.assert_equal({ action = "notify", reason = "payment_failed", notify = "payment_reminder",
                     grace_period_ends_at = NOW + 1 },
                   event("payment_failed", { subscription = grace(NOW + 1) }))
  end)

  it("suspends at exactly the grace deadline, on a failed payment or a tick", function()
    for _, name in ipairs({ "payment_failed", "tick" }) do
      H.assert_equal({ action = "suspend", reason = "payment_overdue", notify = "suspended",
                       grace_period_ends_at = NOW },
                     event(name, { subscription = grace(NOW) }))
    end
  end)

  it("does not suspend on a tick one second before the deadline", function()
    H.assert_equal({ action = "none", reason = "nothing_due", grace_period_ends_at = NOW + 1 },
                   event("tick", { subscription = grace(NOW + 1) }))
  end)

  it("never suspends an instance that is not active", function()
    for _, status in ipairs(STATUSES) do
      if status ~= "active" then
        local inst = { status = status, status_reason = "payment_overdue" }
        assert.are_not.equal("suspend",
          event("payment_failed", { instance = inst, subscription = grace(NOW - DAY) }).action, status)
        assert.are_not.equal("suspend",
          event("tick", { instance = inst, subscription = grace(NOW - DAY),
                          quota = over_since(NOW - 10 * DAY) }).action, status)
        assert.are_not.equal("suspend",
          event("quota_exceeded", { instance = inst, quota = over_since(NOW - 10 * DAY) }).action,
          status)
      end
    end
  end)

  it("resumes an instance suspended for non-payment when payment succeeds, clearing the grace", function()
    H.assert_equal({ action = "resume", reason = "payment_received", notify = "resumed" },
                   event("payment_succeeded", { instance = suspended("payment_overdue"),
                                                subscription = grace(NOW - DAY) }))
  end)

  it("only notifies a received payment otherwise, and clears the grace", function()
    H.assert_equal({ action = "notify", reason = "payment_received", notify = "payment_received" },
                   event("payment_succeeded", { subscription = grace(NOW + DAY) }))
    H.assert_equal({ action = "notify", reason = "payment_received", notify = "payment_received" },
                   event("payment_succeeded", { instance = suspended("quota_exceeded"),
                                                subscription = { status = "active" } }))
  end)

  it("walks the whole dunning path: fail, remind, suspend, pay, resume", function()
    local sub = { status = "past_due" }
    local out = L.on_event({ event = "payment_failed", now = NOW, instance = { status = "active" },
                             subscription = sub })
    local deadline = out.grace_period_ends_at
    assert.are.equal(NOW + 7 * DAY, deadline)
    sub = grace(deadline)
    out = L.on_event({ event = "payment_failed", now = NOW + 3 * DAY,
                       instance = { status = "active" }, subscription = sub })
    assert.are.equal("payment_reminder", out.notify)
    assert.are.equal(deadline, out.grace_period_ends_at)
    out = L.on_event({ event = "tick", now = deadline - 1, instance = { status = "active" },
                       subscription = sub })
    assert.are.equal("none", out.action)
    out = L.on_event({ event = "tick", now = deadline, instance = { status = "active" },
                       subscription = sub })
    assert.are.equal("suspend", out.action)
    out = L.on_event({ event = "tick", now = deadline + 60,
                       instance = suspended("payment_overdue"), subscription = sub })
    assert.are.equal("none", out.action)
    out = L.on_event({ event = "payment_succeeded", now = deadline + DAY,
                       instance = suspended("payment_overdue"), subscription = sub })
    assert.are.equal("resume", out.action)
    assert.is_nil(out.grace_period_ends_at)
  end)
end)

describe("lifecycle.on_event quota", function()
  it("notifies when the quota is first exceeded", function()
    H.assert_equal({ action = "notify", reason = "quota_exceeded", notify = "quota_exceeded" },
                   event("quota_exceeded", { quota = { status = "exceeded" } }))
  end)

  it("suspends after exactly 3 days over quota, not 1 s earlier", function()
    H.assert_equal({ action = "notify", reason = "quota_exceeded", notify = "quota_exceeded" },
                   event("quota_exceeded", { quota = over_since(NOW - 3 * DAY + 1) }))
    H.assert_equal({ action = "suspend", reason = "quota_exceeded", notify = "suspended" },
                   event("quota_exceeded", { quota = over_since(NOW - 3 * DAY) }))
  end)

  it("suspends on a tick once over quota for 3 days", function()
    H.assert_equal({ action = "suspend", reason = "quota_exceeded", notify = "suspended" },
                   event("tick", { quota = over_since(NOW - 3 * DAY) }))
    H.assert_equal({ action = "none", reason = "nothing_due" },
                   event("tick", { quota = over_since(NOW - 3 * DAY + 1) }))
    H.assert_equal({ action = "none", reason = "nothing_due" },
                   event("tick", { quota = { status = "ok", exceeded_since = NOW - 9 * DAY } }))
  end)

  it("keeps the payment grace untouched on quota events", function()
    local out = event("quota_exceeded", { quota = over_since(NOW), subscription = grace(NOW + DAY) })
    assert.are.equal(NOW + DAY, out.grace_period_ends_at)
    out = event("quota_ok", { instance = suspended("quota_exceeded"), subscription = grace(NOW + DAY) })
    assert.are.equal(NOW + DAY, out.grace_period_ends_at)
  end)

  it("resumes an instance suspended for quota when back under quota", function()
    H.assert_equal({ action = "resume", reason = "quota_ok", notify = "resumed" },
                   event("quota_ok", { instance = suspended("quota_exceeded"),
                                       quota = { status = "ok" } }))
  end)

  it("never resumes an instance suspended for another reason, or not suspended", function()
    H.assert_equal({ action = "none", reason = "quota_ok" },
                   event("quota_ok", { instance = suspended("payment_overdue") }))
    for _, status in ipairs(STATUSES) do
      if status ~= "suspended" then
        local inst = { status = status, status_reason = "quota_exceeded" }
        assert.are.equal("none", event("quota_ok", { instance = inst }).action, status)
        assert.are_not.equal("resume",
          event("payment_succeeded", { instance = { status = status, status_reason = "payment_overdue" },
                                       subscription = grace(NOW) }).action, status)
      end
    end
  end)

  it("says nothing_due on a quiet tick", function()
    H.assert_equal({ action = "none", reason = "nothing_due" },
                   event("tick", { subscription = { status = "active" }, quota = { status = "ok" } }))
    H.assert_equal({ action = "none", reason = "nothing_due" }, event("tick"))
  end)

  it("refuses an unknown event", function()
    assert.has_error(function() L.on_event({ event = "refund", now = NOW, instance = {} }) end)
  end)

  it("passes its own examples", function()
    H.assert_examples("lifecycle")
  end)

  it("is pure: no globals, no state, input untouched", function()
    H.assert_pure("lifecycle")
  end)
end)
