-- lifecycle.lua: what happens to an instance when a payment fails or succeeds, when it
-- goes over or back under quota, and on the periodic tick: notify, suspend, resume.
--
-- M.on_event(input) -> { action = "none"|"notify"|"suspend"|"resume", reason = string,
--                        notify = string or nil, grace_period_ends_at = integer or nil }
--
-- input:
--   event         "payment_failed"|"payment_succeeded"|"quota_exceeded"|"quota_ok"|"tick"
--   now           integer unix seconds
--   instance      { status = "active"|"suspended"|..., status_reason = string or nil }
--   subscription  { status = string, grace_period_ends_at = integer or nil }
--                 (may be absent for quota events)
--   quota         { status = "ok"|"warning"|"exceeded", exceeded_since = integer or nil }
--                 (may be absent for payment events)
--
-- output.grace_period_ends_at is what the core stores as the subscription's payment
-- grace deadline: the input's value to keep it, nil to clear it (only
-- payment_succeeded clears it; with no subscription in the input it is nil).
-- output.notify names the message to send the customer: "payment_failed",
-- "payment_reminder", "suspended", "resumed", "payment_received", "quota_exceeded".
--
-- Rules (our defaults: the spec says only that quotas are enforced and that billing
-- runs through Stripe; it gives no dunning or suspension rules):
--   * Payment grace: 7 days (PAYMENT_GRACE): a week for Stripe's automatic retries and
--     for the customer to update the card before service stops.
--   * Quota grace: 3 days (QUOTA_GRACE) over quota before suspension, time to upgrade
--     or clean up after the "quota_exceeded" notice.
--   * payment_failed: no grace running -> notify "payment_failed", start the grace
--     (now + 7 days); grace running -> notify "payment_reminder", keep it; grace ended
--     -> suspend (reason "payment_overdue", notify "suspended"), or nothing if the
--     instance is not active.
--   * tick: grace ended -> suspend as above; over quota for 3 days -> suspend (reason
--     "quota_exceeded"); else action "none", reason "nothing_due".
--   * payment_succeeded: clear the grace; resume an instance suspended for
--     "payment_overdue" (reason "payment_received", notify "resumed"), else notify
--     "payment_received".
--   * quota_exceeded: over quota since at least 3 days and active -> suspend (reason
--     "quota_exceeded", notify "suspended"); else notify "quota_exceeded".
--   * quota_ok: resume an instance suspended for "quota_exceeded" (reason "quota_ok",
--     notify "resumed"); else nothing.
--   * Only an "active" instance is ever suspended, only a "suspended" one resumed.
--     A deadline reached exactly (now == deadline) counts as passed.
--   * An unknown event is an error.
--
-- To change a grace period: PAYMENT_GRACE or QUOTA_GRACE below.

local M = {}

local DAY = 86400
local PAYMENT_GRACE = 7 * DAY
local QUOTA_GRACE = 3 * DAY

local function answer(action, reason, notify, grace)
  return { action = action, reason = reason, notify = notify, grace_period_ends_at = grace }
end

function M.on_event(input)
  local event, now = input.event, math.floor(input.now)
  local instance, sub, quota = input.instance or {}, input.subscription, input.quota
  local active = instance.status == "active"
  local suspended_for = instance.status == "suspended" and instance.status_reason or nil
  local grace = sub and sub.grace_period_ends_at
  if grace then grace = math.floor(grace) end
  local payment_overdue = grace ~= nil and now >= grace
  local since = quota and quota.status == "exceeded" and quota.exceeded_since
  local quota_overdue = since and now - since >= QUOTA_GRACE or false

  if event == "payment_failed" then
    if grace == nil then
      return answer("notify", "payment_failed", "payment_failed", now + PAYMENT_GRACE)
    elseif not payment_overdue then
      return answer("notify", "payment_failed", "payment_reminder", grace)
    elseif active then
      return answer("suspend", "payment_overdue", "suspended", grace)
    end
    return answer("none", "payment_overdue", nil, grace)

  elseif event == "tick" then
    if payment_overdue and active then
      return answer("suspend", "payment_overdue", "suspended", grace)
    elseif quota_overdue and active then
      return answer("suspend", "quota_exceeded", "suspended", grace)
    end
    return answer("none", "nothing_due", nil, grace)

  elseif event == "payment_succeeded" then
    if suspended_for == "payment_overdue" then
      return answer("resume", "payment_received", "resumed", nil)
    end
    return answer("notify", "payment_received", "payment_received", nil)

  elseif event == "quota_exceeded" then
    -- the event itself says the quota is exceeded, whatever quota.status still reads
    local start = quota and quota.exceeded_since
    if start and now - start >= QUOTA_GRACE and active then
      return answer("suspend", "quota_exceeded", "suspended", grace)
    end
    return answer("notify", "quota_exceeded", "quota_exceeded", grace)

  elseif event == "quota_ok" then
    if suspended_for == "quota_exceeded" then
      return answer("resume", "quota_ok", "resumed", grace)
    end
    return answer("none", "quota_ok", nil, grace)
  end

  error("unknown event '" .. tostring(event) .. "'")
end

local NOW = 1767312000

M.examples = {
  { fn = "on_event",
    input = { event = "payment_failed", now = NOW,
              instance = { status = "active" },
              subscription = { status = "past_due" } },
    output = { action = "notify", reason = "payment_failed", notify = "payment_failed",
               grace_period_ends_at = NOW + 7 * 86400 } },
  -- edge: the grace ends exactly now
  { fn = "on_event",
    input = { event = "tick", now = NOW,
              instance = { status = "active" },
              subscription = { status = "past_due", grace_period_ends_at = NOW } },
    output = { action = "suspend", reason = "payment_overdue", notify = "suspended",
               grace_period_ends_at = NOW } },
  { fn = "on_event",
    input = { event = "payment_succeeded", now = NOW,
              instance = { status = "suspended", status_reason = "payment_overdue" },
              subscription = { status = "active", grace_period_ends_at = NOW - 86400 } },
    output = { action = "resume", reason = "payment_received", notify = "resumed" } },
  { fn = "on_event",
    input = { event = "quota_exceeded", now = NOW,
              instance = { status = "active" },
              quota = { status = "exceeded", exceeded_since = NOW - 3 * 86400 + 1 } },
    output = { action = "notify", reason = "quota_exceeded", notify = "quota_exceeded" } },
  { fn = "on_event",
    input = { event = "tick", now = NOW, instance = { status = "active" },
              subscription = { status = "active" }, quota = { status = "ok" } },
    output = { action = "none", reason = "nothing_due" } },
}

return M
