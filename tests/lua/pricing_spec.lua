-- policies/pricing.lua: a day of usage in cents, and the monthly invoice.
local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
local H = dofile(here .. "/policy_helper.lua")
local P = H.load("pricing")

local GIB = 1073741824

local function plan(fields)
  local p = { price_monthly_cents = 2900, storage_quota_gb = 10,
              api_requests_quota_daily = 100000, overage_storage_gb_month_cents = 25,
              overage_api_million_cents = 100 }
  for k, v in pairs(fields or {}) do p[k] = v end
  return p
end

local function usage(bytes, requests, date)
  return { date = date or "2026-11-03", api_requests = requests, storage_bytes = bytes,
           compute_hours = 24 }
end

local function daily(p, u, days)
  local out = P.daily({ plan = p, usage = u, days_in_month = days or 30 })
  H.assert_contract("pricing", "daily", out)
  return out
end

local function invoice(p, days, period_days)
  local out = P.invoice({ plan = p, days = days,
                          period = { start = "2026-11-01", ["end"] = "2026-12-01",
                                     days = period_days or 30 } })
  H.assert_contract("pricing", "invoice", out)
  return out
end

local function by_code(out)
  local t = {}
  for _, l in ipairs(out.lines) do t[l.code] = l end
  return t
end

describe("pricing.daily", function()
  it("prices the documented day: base 97 + storage 2 + requests 5 = 104 cents", function()
    local out = daily(plan(), usage(12884901888, 150000))
    assert.are.equal(104, out.total_cents)
    local l = by_code(out)
    assert.are.equal(97, l.base.amount_cents)
    assert.are.equal(1, l.base.quantity)
    assert.are.equal(2900 / 30, l.base.unit_cents)
    assert.are.equal(2, l.storage_overage.quantity)
    assert.are.equal("integer", math.type(l.storage_overage.quantity))
    assert.are.equal(2, l.storage_overage.amount_cents)
    assert.are.equal(50000, l.api_overage.quantity)
    assert.are.equal(5, l.api_overage.amount_cents)
    assert.are.same({ "base", "storage_overage", "api_overage" },
                    { out.lines[1].code, out.lines[2].code, out.lines[3].code })
  end)

  it("omits overage lines when usage is exactly at quota", function()
    local out = daily(plan(), usage(10 * GIB, 100000))
    assert.are.equal(1, #out.lines)
    assert.are.equal("base", out.lines[1].code)
    assert.are.equal(97, out.total_cents)
  end)

  it("rounds half up to whole cents", function()
    -- base: 45 / 30 = 1.5 -> 2, 15 / 30 = 0.5 -> 1, 14 / 30 = 0.47 -> 0
    assert.are.equal(2, daily(plan({ price_monthly_cents = 45 }), usage(0, 0)).total_cents)
    assert.are.equal(1, daily(plan({ price_monthly_cents = 15 }), usage(0, 0)).total_cents)
    assert.are.equal(0, daily(plan({ price_monthly_cents = 14 }), usage(0, 0)).total_cents)
    -- storage: 1 GB over at 15 cents / 30 days = 0.5 -> 1
    local p = plan({ price_monthly_cents = 0, overage_storage_gb_month_cents = 15 })
    assert.are.equal(1, by_code(daily(p, usage(11 * GIB, 0))).storage_overage.amount_cents)
    -- requests: 5000 over at 100 cents per million = 0.5 -> 1; 4999 -> 0
    p = plan({ price_monthly_cents = 0 })
    assert.are.equal(1, by_code(daily(p, usage(0, 105000))).api_overage.amount_cents)
    assert.are.equal(0, by_code(daily(p, usage(0, 104999))).api_overage.amount_cents)
  end)

  it("prorates by the days of the month", function()
    assert.are.equal(94, daily(plan(), usage(0, 0), 31).total_cents)   -- 93.55
    assert.are.equal(104, daily(plan(), usage(0, 0), 28).total_cents)  -- 103.57
    assert.are.equal(100, daily(plan({ price_monthly_cents = 3000 }), usage(0, 0), 30).total_cents)
    assert.are.equal("integer",
      math.type(daily(plan({ price_monthly_cents = 3000 }), usage(0, 0)).lines[1].unit_cents))
  end)

  it("bills a fraction of a GB", function()
    local l = by_code(daily(plan(), usage(10 * GIB + GIB // 2, 0))).storage_overage
    assert.are.equal(0.5, l.quantity)
    assert.are.equal(0, l.amount_cents) -- 0.5 * 25 / 30 = 0.42
  end)

  it("keeps a zero-rate overage line (hard quota) with a 0 amount", function()
    local hobby = { name = "Hobby", price_monthly_cents = 0, storage_quota_gb = 1,
                    api_requests_quota_daily = 10000, overage_storage_gb_month_cents = 0,
                    overage_api_million_cents = 0 }
    local out = daily(hobby, usage(2 * GIB, 20000))
    assert.are.equal(0, out.total_cents)
    assert.are.equal(3, #out.lines)
    assert.are.equal("Hobby plan, 1 day of 30 (2026-11-03)", out.lines[1].description)
  end)

  it("does not bill compute hours", function()
    local u = usage(0, 0)
    u.compute_hours = 1000
    assert.are.equal(97, daily(plan(), u).total_cents)
  end)

  it("refuses a month of 0 days", function()
    assert.has_error(function() P.daily({ plan = plan(), usage = usage(0, 0), days_in_month = 0 }) end)
  end)
end)

describe("pricing.invoice", function()
  it("bills the full monthly price once, not the sum of rounded days", function()
    local days = {}
    for d = 1, 30 do days[d] = usage(0, 0, string.format("2026-11-%02d", d)) end
    local out = invoice(plan(), days)
    H.assert_equal({ lines = { { code = "base", description = "Plan, 2026-11-01 to 2026-12-01",
                                 quantity = 1, unit_cents = 2900, amount_cents = 2900 } },
                     subtotal_cents = 2900, tax_cents = 0, total_cents = 2900 }, out)
    local sum = 0
    for _, u in ipairs(days) do sum = sum + daily(plan(), u).total_cents end
    assert.are.equal(2910, sum) -- 30 x 97: the drift the invoice avoids
  end)

  it("rounds storage overage once over the period", function()
    -- 30 days of 0.5 GB over at 25 cents: each day 0.42 -> 0, the month 12.5 -> 13
    local days = {}
    for d = 1, 30 do days[d] = usage(10 * GIB + GIB // 2, 0) end
    local l = by_code(invoice(plan(), days)).storage_overage
    assert.are.equal(13, l.amount_cents)
    assert.are.equal(15, l.quantity)
    assert.are.equal(0, by_code(daily(plan(), days[1])).storage_overage.amount_cents)
  end)

  it("sums requests above each day's quota, never netting a quiet day", function()
    local out = invoice(plan(), { usage(0, 150000), usage(0, 50000), usage(0, 130000) })
    local l = by_code(out).api_overage
    assert.are.equal(80000, l.quantity)
    assert.are.equal(8, l.amount_cents)
  end)

  it("has totals equal to the sum of its lines, and tax 0", function()
    local days = {}
    local seed = 12345
    for d = 1, 31 do
      seed = (seed * 1103515245 + 12345) % 2147483648
      days[d] = usage(seed % (20 * GIB), seed % 300000)
    end
    local out = invoice(plan(), days, 31)
    local sum = 0
    for _, l in ipairs(out.lines) do sum = sum + l.amount_cents end
    assert.are.equal(sum, out.subtotal_cents)
    assert.are.equal(0, out.tax_cents)
    assert.are.equal(out.subtotal_cents + out.tax_cents, out.total_cents)
    assert.are.equal("integer", math.type(out.total_cents))
  end)

  it("bills only the base for a period without usage rows", function()
    local out = invoice(plan(), {})
    assert.are.equal(1, #out.lines)
    assert.are.equal(2900, out.total_cents)
    assert.are.equal(2900, invoice(plan(), nil).total_cents)
  end)

  it("refuses a period of 0 days", function()
    assert.has_error(function()
      P.invoice({ plan = plan(), days = {}, period = { start = "a", ["end"] = "b", days = 0 } })
    end)
  end)

  it("passes its own examples", function()
    H.assert_examples("pricing")
  end)

  it("is pure: no globals, no state, input untouched", function()
    H.assert_pure("pricing")
  end)
end)
