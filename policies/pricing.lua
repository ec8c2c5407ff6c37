-- pricing.lua: what a day of usage costs, and the monthly invoice.
--
-- M.daily(input) -> { total_cents = integer >= 0, lines = { line, ... } }
--   input:
--     plan   { price_monthly_cents = integer, storage_quota_gb = integer,
--              api_requests_quota_daily = integer,
--              overage_storage_gb_month_cents = integer,   -- per GB above quota per month
--              overage_api_million_cents = integer,        -- per million requests above quota
--              name = string (optional, for descriptions) }
--     usage  { date = "YYYY-MM-DD", api_requests = integer, storage_bytes = integer,
--              compute_hours = number }   (one row of instance_usage)
--     days_in_month  integer > 0: days of the month `date` falls in
--
-- M.invoice(input) -> { lines = { line, ... }, subtotal_cents = integer,
--                       tax_cents = 0, total_cents = integer }
--   input:
--     plan    as above
--     period  { start = "YYYY-MM-DD", ["end"] = "YYYY-MM-DD" (exclusive), days = integer > 0 }
--     days    array of usage tables as above, one per day of the period (may be empty)
--
-- line: { code = "base"|"storage_overage"|"api_overage", description = string,
--         quantity = number, unit_cents = number, amount_cents = integer >= 0 }
--
-- Rules (the spec gives no prices: instance_usage has "total_cost" per day and there
-- are "invoices"; everything below is our default, chosen to make bills exact):
--   * base: the monthly price. Daily: quantity 1 (day), unit_cents = price /
--     days_in_month, amount = that rounded. Invoice: quantity 1 (month), the full
--     monthly price, not the sum of rounded days, so there is no rounding drift.
--   * storage_overage: GB above storage_quota_gb (1 GB = 1073741824 bytes, as the
--     spec's "storage_quota_gb * 1073741824"), billed per GB-month and prorated per
--     day: over_gb * overage_storage_gb_month_cents / days. quantity is in GB-days,
--     unit_cents per GB-day. The invoice sums every day's GB above quota and rounds once.
--   * api_overage: requests above the daily quota ("api_requests_quota_daily"), at
--     overage_api_million_cents per million: quantity in requests, unit_cents per
--     request. The invoice sums each day's requests above that day's quota and rounds once.
--   * compute_hours are not billed: compute is part of the plan's price.
--   * An overage line with quantity 0 is omitted; the base line is always present.
--   * Rounding: half up to whole cents, computed exactly in integers
--     (amount = (2 * n + d) // (2 * d)), so every amount is an integer.
--     Exact while bytes-above-quota x cents-per-GB-month stays below 4.6e18 (for
--     25 cents: 180 PB-days), far beyond any plan.
--   * total_cents = sum of the amounts; tax_cents is 0 (taxes are Stripe's job);
--     invoice total = subtotal + tax.
--
-- To change prices or quotas: edit the plan. To bill compute or add tax: add a line here.

local M = {}

local GIB = 1073741824
local MILLION = 1000000

-- n / d rounded half up to an integer, for n >= 0, d > 0 (integers or integral floats)
local function round_div(n, d)
  local q = (2 * n + d) // (2 * d)
  return math.tointeger(q) or q
end

-- an integral float becomes an integer, so 2.0 reads 2 in JSON and compares equal
local function num(x)
  return math.tointeger(x) or x
end

-- for descriptions: 2, 2.5, 12.346, 0.000123
local function show(x)
  local i = math.tointeger(x)
  if i then return tostring(i) end
  if x < 1 then return string.format("%.3g", x) end
  local s = string.format("%.3f", x):gsub("%.?0+$", "")
  return s
end

local function positive(x, what)
  if type(x) ~= "number" or x <= 0 then
    error(what .. " must be a positive number, got " .. tostring(x))
  end
  return x
end

local function line(code, description, quantity, unit_cents, amount_cents)
  return { code = code, description = description, quantity = num(quantity),
           unit_cents = num(unit_cents), amount_cents = amount_cents }
end

-- bytes above the storage quota and requests above the daily quota of one day
local function overage(plan, usage)
  local over_bytes = (usage.storage_bytes or 0) - plan.storage_quota_gb * GIB
  local over_requests = (usage.api_requests or 0) - plan.api_requests_quota_daily
  if over_bytes < 0 then over_bytes = 0 end
  if over_requests < 0 then over_requests = 0 end
  return over_bytes, over_requests
end

-- base line, then the overage lines that are not empty; returns lines and their sum
local function bill(plan, base, over_bytes, over_requests, days)
  local lines, total = { base }, base.amount_cents
  local storage_rate = plan.overage_storage_gb_month_cents or 0
  local api_rate = plan.overage_api_million_cents or 0
  if over_bytes > 0 then
    local gb = over_bytes / GIB
    local amount = round_div(over_bytes * storage_rate, GIB * days)
    lines[#lines + 1] = line("storage_overage",
      "Storage above the " .. show(plan.storage_quota_gb) .. " GB quota: " .. show(gb) ..
      " GB-days at " .. show(storage_rate) .. " cents per GB-month",
      gb, storage_rate / days, amount)
    total = total + amount
  end
  if over_requests > 0 then
    local amount = round_div(over_requests * api_rate, MILLION)
    lines[#lines + 1] = line("api_overage",
      "API requests above the " .. show(plan.api_requests_quota_daily) .. " daily quota: " ..
      show(over_requests) .. " at " .. show(api_rate) .. " cents per million",
      over_requests, api_rate / MILLION, amount)
    total = total + amount
  end
  return lines, total
end

local function plan_label(plan)
  return plan.name and (plan.name .. " plan") or "Plan"
end

function M.daily(input)
  local plan, usage = input.plan, input.usage
  local days = positive(input.days_in_month, "days_in_month")
  local price = plan.price_monthly_cents
  local base = line("base",
    plan_label(plan) .. ", 1 day of " .. show(days) .. " (" .. tostring(usage.date) .. ")",
    1, price / days, round_div(price, days))
  local over_bytes, over_requests = overage(plan, usage)
  local lines, total = bill(plan, base, over_bytes, over_requests, days)
  return { total_cents = total, lines = lines }
end

function M.invoice(input)
  local plan, period = input.plan, input.period
  local days = positive(period.days, "period.days")
  local price = num(plan.price_monthly_cents)
  local base = line("base",
    plan_label(plan) .. ", " .. tostring(period.start) .. " to " .. tostring(period["end"]),
    1, price, price)
  local over_bytes, over_requests = 0, 0
  for _, usage in ipairs(input.days or {}) do
    local b, r = overage(plan, usage)
    over_bytes, over_requests = over_bytes + b, over_requests + r
  end
  local lines, subtotal = bill(plan, base, over_bytes, over_requests, days)
  local tax = 0
  return { lines = lines, subtotal_cents = subtotal, tax_cents = tax,
           total_cents = subtotal + tax }
end

local STARTER = { name = "Starter", price_monthly_cents = 2900, storage_quota_gb = 10,
                  api_requests_quota_daily = 100000, overage_storage_gb_month_cents = 25,
                  overage_api_million_cents = 100 }

M.examples = {
  { fn = "daily",
    input = { plan = STARTER, days_in_month = 30,
              usage = { date = "2026-11-03", api_requests = 150000,
                        storage_bytes = 12884901888, compute_hours = 24 } },
    output = { total_cents = 104, lines = {
      { code = "base", description = "Starter plan, 1 day of 30 (2026-11-03)",
        quantity = 1, unit_cents = 2900 / 30, amount_cents = 97 },
      { code = "storage_overage",
        description = "Storage above the 10 GB quota: 2 GB-days at 25 cents per GB-month",
        quantity = 2, unit_cents = 25 / 30, amount_cents = 2 },
      { code = "api_overage",
        description = "API requests above the 100000 daily quota: 50000 at 100 cents per million",
        quantity = 50000, unit_cents = 100 / 1000000, amount_cents = 5 } } } },
  -- edge: usage within quota, no overage lines; 2900 / 31 = 93.548 rounds to 94
  { fn = "daily",
    input = { plan = STARTER, days_in_month = 31,
              usage = { date = "2026-12-01", api_requests = 100000,
                        storage_bytes = 10737418240, compute_hours = 24 } },
    output = { total_cents = 94, lines = {
      { code = "base", description = "Starter plan, 1 day of 31 (2026-12-01)",
        quantity = 1, unit_cents = 2900 / 31, amount_cents = 94 } } } },
  -- two days of 1 GB over: 2 * 25 / 30 = 1.67 rounds once to 2 (daily lines would be 1 + 1)
  { fn = "invoice",
    input = { plan = STARTER,
              period = { start = "2026-11-01", ["end"] = "2026-12-01", days = 30 },
              days = {
                { date = "2026-11-01", api_requests = 100500, storage_bytes = 11811160064 },
                { date = "2026-11-02", api_requests = 99000, storage_bytes = 11811160064 } } },
    output = { subtotal_cents = 2902, tax_cents = 0, total_cents = 2902, lines = {
      { code = "base", description = "Starter plan, 2026-11-01 to 2026-12-01",
        quantity = 1, unit_cents = 2900, amount_cents = 2900 },
      { code = "storage_overage",
        description = "Storage above the 10 GB quota: 2 GB-days at 25 cents per GB-month",
        quantity = 2, unit_cents = 25 / 30, amount_cents = 2 },
      { code = "api_overage",
        description = "API requests above the 100000 daily quota: 500 at 100 cents per million",
        quantity = 500, unit_cents = 100 / 1000000, amount_cents = 0 } } } },
}

return M
