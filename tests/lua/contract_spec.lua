-- Every policy against the contract the core validates: across many generated inputs
-- each answer has its required fields, the right types (integers are Lua integers) and
-- no field outside the contract. Also checks the policy files themselves (header,
-- nothing outside the sandbox) and that the purity checks of policy_helper bite.
local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
local H = dofile(here .. "/policy_helper.lua")

local POLICIES = {
  provisioning = { "decide" },
  placement = { "place" },
  quotas = { "check" },
  pricing = { "daily", "invoice" },
  backups = { "schedule", "expiry" },
  lifecycle = { "on_event" },
}

local GIB = 1073741824
local NOW = 1767312000

-- a small deterministic generator, so failures reproduce
local function rng(seed)
  local state = seed
  return function(n)
    state = (state * 1103515245 + 12345) % 2147483648
    return state % n
  end
end

local function each(list, f)
  for _, v in ipairs(list) do f(v) end
end

local inputs = {}

inputs.provisioning = function(add)
  each({ "hobby", "starter", "professional", "business", "enterprise", "unknown" }, function(code)
    for count = 0, 3 do
      for _, max in ipairs({ 1, 3 }) do
        add("decide", { plan = { code = code, name = code, storage_quota_gb = 10,
                                 api_requests_quota_daily = 1000, max_instances = max },
                        request = { name = "n", subdomain = "n" },
                        user = { instance_count = count } })
      end
    end
  end)
end

inputs.placement = function(add)
  local r = rng(7)
  for _ = 1, 300 do
    local servers = {}
    for i = 1, r(5) do
      local max = 1 + r(150)
      servers[i] = { id = "s" .. r(10), status = ({ "active", "active", "draining", "degraded" })[1 + r(4)],
                     current_databases = r(max + 1), max_databases = max,
                     storage_used_gb = r(1000) / 10, storage_total_gb = 100 }
    end
    add("place", { request = { storage_quota_gb = r(5) }, servers = servers, opening = r(2) == 1 })
  end
end

inputs.quotas = function(add)
  each({ 0, 1, 10, 1000 }, function(gb)
    each({ 0, 10000, 100000 }, function(api)
      each({ 0, 0.5, 0.899, 0.9, 0.95, 1, 2 }, function(fs)
        each({ 0, 0.5, 0.899, 0.9, 0.95, 1, 2 }, function(fa)
          add("check", { quotas = { storage_gb = gb, api_requests_daily = api },
                         usage = { storage_bytes = math.floor(gb * GIB * fs + (gb == 0 and fs or 0)),
                                   api_requests_today = math.floor(api * fa + (api == 0 and fa or 0)) } })
        end)
      end)
    end)
  end)
end

inputs.pricing = function(add)
  local r = rng(11)
  local plans = {
    { price_monthly_cents = 0, storage_quota_gb = 1, api_requests_quota_daily = 10000,
      overage_storage_gb_month_cents = 0, overage_api_million_cents = 0 },
    { name = "Starter", price_monthly_cents = 2900, storage_quota_gb = 10,
      api_requests_quota_daily = 100000, overage_storage_gb_month_cents = 25,
      overage_api_million_cents = 100 },
    { name = "Enterprise", price_monthly_cents = 199900, storage_quota_gb = 1000,
      api_requests_quota_daily = 100000000, overage_storage_gb_month_cents = 10,
      overage_api_million_cents = 25 },
  }
  for _, plan in ipairs(plans) do
    local days = {}
    for d = 1, 31 do
      local u = { date = string.format("2026-12-%02d", d),
                  api_requests = r(2 * plan.api_requests_quota_daily + 1),
                  storage_bytes = r(2 * plan.storage_quota_gb + 1) * GIB + r(GIB),
                  compute_hours = 24 }
      days[d] = u
      add("daily", { plan = plan, usage = u, days_in_month = 28 + r(4) })
    end
    add("invoice", { plan = plan, days = days,
                     period = { start = "2026-12-01", ["end"] = "2027-01-01", days = 31 } })
    add("invoice", { plan = plan, days = {},
                     period = { start = "2026-12-01", ["end"] = "2027-01-01", days = 31 } })
  end
end

inputs.backups = function(add)
  local histories = {
    {},
    { { backup_type = "automatic", status = "completed", completed_at = NOW - 86400 } },
    { { backup_type = "automatic", status = "completed", completed_at = NOW - 3600 },
      { backup_type = "manual", status = "completed", completed_at = NOW } },
    { { backup_type = "automatic", status = "failed", completed_at = NOW - 10 } },
  }
  local plans = { false, { backup_interval_hours = 12 },
                  { backup_interval_hours = 1, backup_retention_days = 1, pitr_window_minutes = 1 } }
  each({ "shared", "dedicated" }, function(tier)
    each(plans, function(plan)
      each(histories, function(h)
        add("schedule", { tier = tier, plan = plan or nil, backups = h, now = NOW })
      end)
      each({ "automatic", "manual", "pre_delete" }, function(kind)
        add("expiry", { backup_type = kind, tier = tier, plan = plan or nil, completed_at = NOW })
      end)
    end)
  end)
end

inputs.lifecycle = function(add)
  local instances = {
    { status = "active" }, { status = "suspended", status_reason = "payment_overdue" },
    { status = "suspended", status_reason = "quota_exceeded" }, { status = "provisioning" },
    { status = "deleted" },
  }
  local subs = { false, { status = "active" }, { status = "past_due", grace_period_ends_at = NOW + 1 },
                 { status = "past_due", grace_period_ends_at = NOW } }
  local quotas = { false, { status = "ok" }, { status = "exceeded" },
                   { status = "exceeded", exceeded_since = NOW - 3 * 86400 } }
  each({ "payment_failed", "payment_succeeded", "quota_exceeded", "quota_ok", "tick" }, function(ev)
    each(instances, function(inst)
      each(subs, function(sub)
        each(quotas, function(q)
          add("on_event", { event = ev, now = NOW, instance = inst, subscription = sub or nil,
                            quota = q or nil })
        end)
      end)
    end)
  end)
end

describe("policy contracts", function()
  for name, fns in pairs(POLICIES) do
    describe(name, function()
      local M = H.load(name)

      it("exports exactly its contract's functions and examples for each", function()
        local covered = {}
        for _, fn in ipairs(fns) do assert.is_function(M[fn], name .. "." .. fn) end
        for _, e in ipairs(M.examples) do
          assert.is_not_nil(H.contract[name][e.fn], name .. ": example of unknown " .. tostring(e.fn))
          assert.is_table(e.input)
          assert.is_table(e.output)
          covered[e.fn] = true
        end
        for _, fn in ipairs(fns) do assert.is_true(covered[fn], name .. "." .. fn .. " has no example") end
      end)

      it("answers every generated input inside the contract", function()
        local n = 0
        inputs[name](function(fn, input)
          local out = M[fn](input)
          local err = H.contract[name][fn](out)
          assert.is_nil(err, name .. "." .. fn .. ": " .. tostring(err))
          n = n + 1
        end)
        assert.is_true(n >= 20, name .. ": only " .. n .. " inputs")
      end)

      it("opens with a header comment naming the file and its contract", function()
        local f = assert(io.open(H.path(name)))
        local src = f:read("a")
        f:close()
        assert.is_truthy(src:find("^%-%- " .. name .. "%.lua: "), "header")
        assert.is_truthy(src:find("spec", 1, true), "the header cites the spec")
      end)

      it("names nothing outside the sandbox and uses no os clock", function()
        local f = assert(io.open(H.path(name)))
        local code = f:read("a"):gsub("%-%-%[(=*)%[.-%]%1%]", ""):gsub("%-%-[^\n]*", "")
        f:close()
        for _, word in ipairs({ "os", "io", "require", "load", "loadstring", "dofile", "loadfile",
                                "debug", "coroutine", "package", "_G", "_ENV", "collectgarbage",
                                "print" }) do
          assert.is_falsy(code:find("%f[%w_]" .. word .. "%f[^%w_]"), name .. " uses " .. word)
        end
      end)
    end)
  end
end)

describe("policy_helper checks", function()
  local function sandboxed(src)
    return assert(load(src, "=test", "t", H.sandbox()))
  end

  it("catches a global write at load and during a call", function()
    assert.has_error(function() sandboxed("x = 1")() end)
    local M = sandboxed("local M = {} function M.f() counter = 1 end return M")()
    assert.has_error(function() M.f() end)
  end)

  it("catches a read of an undefined global, os and io included", function()
    assert.has_error(function() sandboxed("return os.time()")() end)
    assert.has_error(function() sandboxed("return io")() end)
    assert.has_error(function() sandboxed("return require")() end)
  end)

  it("keeps the libraries read-only", function()
    assert.has_error(function() sandboxed("math.pi = 3")() end)
  end)

  it("allows what the engine allows", function()
    local v = sandboxed("return math.floor(2.5) + select('#', 1, 2) + #string.rep('a', 2) + unpack({ 1 })")()
    assert.are.equal(7, v)
  end)

  it("tells 3 from 3.0 and spots missing or extra fields", function()
    assert.is_true(H.equal({ a = 3, b = { 1 } }, { a = 3, b = { 1 } }))
    assert.is_false(H.equal({ a = 3 }, { a = 3.0 }))
    assert.is_false(H.equal({ a = 3 }, { a = 3, b = 1 }))
    assert.is_false(H.equal({ a = 3, b = 1 }, { a = 3 }))
  end)

  it("rejects an answer with a field outside the contract", function()
    assert.is_string(H.contract.quotas.check({ status = "ok", action = "none", ratio = 0.1 }))
    assert.is_string(H.contract.quotas.check({ status = "ok", action = "none", resource = "storage" }))
    assert.is_string(H.contract.backups.expiry({ expires_at = 1.0 }))
    assert.is_string(H.contract.provisioning.decide({ allowed = false, reason = "x", size = "y" }))
    assert.is_nil(H.contract.quotas.check({ status = "ok", action = "none" }))
  end)
end)
