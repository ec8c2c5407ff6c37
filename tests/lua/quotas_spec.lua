-- policies/quotas.lua: ok / warning at 90 % / exceeded at 100 %, per resource.
local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
local H = dofile(here .. "/policy_helper.lua")
local Q = H.load("quotas")

local GIB = 1073741824

local function check(storage_gb, api_daily, bytes, requests)
  local out = Q.check({ quotas = { storage_gb = storage_gb, api_requests_daily = api_daily },
                        usage = { storage_bytes = bytes, api_requests_today = requests } })
  H.assert_contract("quotas", "check", out)
  return out
end

local OK = { status = "ok", action = "none" }

describe("quotas.check", function()
  it("is ok well under quota", function()
    H.assert_equal(OK, check(10, 100000, 123, 456))
    H.assert_equal(OK, check(10, 100000, 0, 0))
  end)

  it("is ok at 89.9 % of storage and of requests", function()
    H.assert_equal(OK, check(10, 100000, 10 * GIB * 899 // 1000, 0))
    H.assert_equal(OK, check(10, 100000, 0, 89900))
  end)

  it("is ok one byte and one request under 90 %", function()
    H.assert_equal(OK, check(10, 100000, 9 * GIB - 1, 89999))
  end)

  it("warns at exactly 90 % (the spec's query says strictly above; see docs/policies.md)", function()
    H.assert_equal({ status = "warning", action = "notify", resource = "storage" },
                   check(10, 100000, 9 * GIB, 0))
    H.assert_equal({ status = "warning", action = "notify", resource = "api_requests" },
                   check(10, 100000, 0, 90000))
  end)

  it("warns just under 100 %", function()
    H.assert_equal({ status = "warning", action = "notify", resource = "storage" },
                   check(10, 100000, 10 * GIB - 1, 0))
    H.assert_equal({ status = "warning", action = "notify", resource = "api_requests" },
                   check(10, 100000, 0, 99999))
  end)

  it("blocks writes at 100 % of storage (quota in bytes = storage_gb * 1073741824)", function()
    H.assert_equal({ status = "exceeded", action = "block_writes", resource = "storage" },
                   check(10, 100000, 10737418240, 0))
  end)

  it("throttles at 100 % of daily requests", function()
    H.assert_equal({ status = "exceeded", action = "throttle", resource = "api_requests" },
                   check(10, 100000, 0, 100000))
  end)

  it("lets the worse resource decide", function()
    -- storage warning, requests exceeded
    assert.are.equal("api_requests", check(10, 100000, 9 * GIB, 100000).resource)
    -- both exceeded: the higher ratio wins
    assert.are.equal("api_requests", check(10, 100000, 11 * GIB, 200000).resource)
    assert.are.equal("storage", check(10, 100000, 20 * GIB, 110000).resource)
    -- both warning
    assert.are.equal("api_requests", check(10, 100000, 9 * GIB, 95000).resource)
  end)

  it("breaks exact ties in favour of storage", function()
    H.assert_equal({ status = "warning", action = "notify", resource = "storage" },
                   check(10, 100000, 9 * GIB, 90000))
    H.assert_equal({ status = "exceeded", action = "block_writes", resource = "storage" },
                   check(10, 100000, 10 * GIB, 100000))
  end)

  it("treats a quota of 0 as ratio 0 while unused, exceeded once used", function()
    H.assert_equal(OK, check(0, 0, 0, 0))
    H.assert_equal({ status = "exceeded", action = "block_writes", resource = "storage" },
                   check(0, 100, 1, 0))
    H.assert_equal({ status = "exceeded", action = "throttle", resource = "api_requests" },
                   check(10, 0, 0, 1))
  end)

  it("handles the largest plan's quota without overflow", function()
    H.assert_equal({ status = "warning", action = "notify", resource = "storage" },
                   check(1000, 100000000, 900 * GIB, 0))
  end)

  it("stays lean: few instructions and no allocation per call", function()
    local input = { quotas = { storage_gb = 10, api_requests_daily = 100000 },
                    usage = { storage_bytes = 9 * GIB, api_requests_today = 95000 } }
    local n = H.count_instructions(Q.check, input)
    assert.is_true(n < 100, n .. " instructions")
    -- memory allocated per call: none (its answers are shared constants), against one
    -- three-field table as the yardstick
    local calls = 10000
    local function kb_for(f)
      collectgarbage("collect")
      collectgarbage("stop")
      local before = collectgarbage("count")
      for _ = 1, calls do f() end
      local used = collectgarbage("count") - before
      collectgarbage("restart")
      return used
    end
    local s, a, r = "warning", "notify", "api_requests"
    local one_table = kb_for(function() return { status = s, action = a, resource = r } end)
    local check_cost = kb_for(function() return Q.check(input) end)
    assert.is_true(check_cost <= one_table * 0.01,
                   string.format("%.1f KB for %d calls vs %.1f KB", check_cost, calls, one_table))
    -- shared answers, so equal inputs give the very same table
    assert.are.equal(Q.check(input), Q.check(input))
  end)

  it("passes its own examples", function()
    H.assert_examples("quotas")
  end)

  it("is pure: no globals, no state, input untouched", function()
    H.assert_pure("quotas")
  end)
end)
