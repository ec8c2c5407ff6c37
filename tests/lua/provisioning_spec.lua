-- policies/provisioning.lua: tier, compute, size and quotas from the plan; the
-- per-plan instance limit.
local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
local H = dofile(here .. "/policy_helper.lua")
local P = H.load("provisioning")

-- the five plans of seeds/001_plans.sql
local PLANS = {
  hobby = { code = "hobby", name = "Hobby", storage_quota_gb = 1,
            api_requests_quota_daily = 10000, max_instances = 1 },
  starter = { code = "starter", name = "Starter", storage_quota_gb = 10,
              api_requests_quota_daily = 100000, max_instances = 3 },
  professional = { code = "professional", name = "Professional", storage_quota_gb = 50,
                   api_requests_quota_daily = 1000000, max_instances = 10 },
  business = { code = "business", name = "Business", storage_quota_gb = 250,
               api_requests_quota_daily = 10000000, max_instances = 25 },
  enterprise = { code = "enterprise", name = "Enterprise", storage_quota_gb = 1000,
                 api_requests_quota_daily = 100000000, max_instances = 100 },
}

local function decide(code, count)
  return P.decide({ plan = H.copy(PLANS[code]), request = { name = "App", subdomain = "app" },
                    user = { instance_count = count } })
end

describe("provisioning.decide", function()
  it("puts Hobby, Starter and Professional on the shared tier with lambda compute", function()
    for _, code in ipairs({ "hobby", "starter", "professional" }) do
      local d = decide(code, 0)
      H.assert_equal({ allowed = true, database_tier = "shared", compute_tier = "lambda",
                       size = "shared", storage_quota_gb = PLANS[code].storage_quota_gb,
                       api_requests_quota_daily = PLANS[code].api_requests_quota_daily }, d)
    end
  end)

  it("puts Business on a dedicated server with container compute", function()
    H.assert_equal({ allowed = true, database_tier = "dedicated", compute_tier = "container",
                     size = "db.m6g.large", storage_quota_gb = 250,
                     api_requests_quota_daily = 10000000 }, decide("business", 0))
  end)

  it("puts Enterprise on a dedicated server with dedicated compute", function()
    H.assert_equal({ allowed = true, database_tier = "dedicated", compute_tier = "dedicated",
                     size = "db.r6g.2xlarge", storage_quota_gb = 1000,
                     api_requests_quota_daily = 100000000 }, decide("enterprise", 0))
  end)

  it("decides the tier by plan code, not by the plan row's tier columns", function()
    local plan = H.copy(PLANS.business)
    plan.database_tier, plan.compute_tier = "shared", "lambda"
    local d = P.decide({ plan = plan, request = {}, user = { instance_count = 0 } })
    assert.are.equal("dedicated", d.database_tier)
    assert.are.equal("container", d.compute_tier)
  end)

  it("allows up to max_instances and refuses at the limit", function()
    for code, plan in pairs(PLANS) do
      assert.is_true(decide(code, plan.max_instances - 1).allowed, code)
      local refused = decide(code, plan.max_instances)
      assert.is_false(refused.allowed, code)
      assert.is_false(decide(code, plan.max_instances + 5).allowed, code)
      H.assert_contract("provisioning", "decide", refused)
    end
  end)

  it("says how many instances the plan allows", function()
    H.assert_equal({ allowed = false, reason = "plan Hobby allows 1 instance" }, decide("hobby", 1))
    H.assert_equal({ allowed = false, reason = "plan Starter allows 3 instances" }, decide("starter", 3))
  end)

  it("refuses an unknown plan with nothing but allowed and reason", function()
    local d = P.decide({ plan = { code = "platinum", name = "Platinum", max_instances = 5,
                                  storage_quota_gb = 1, api_requests_quota_daily = 1 },
                         request = {}, user = { instance_count = 0 } })
    H.assert_equal({ allowed = false, reason = "unknown plan 'platinum'" }, d)
  end)

  it("refuses an unknown plan before looking at the count", function()
    local d = P.decide({ plan = { code = "x", name = "X", max_instances = 1 },
                         user = { instance_count = 7 } })
    assert.are.equal("unknown plan 'x'", d.reason)
  end)

  it("counts a missing instance_count as 0 and a missing max_instances as 1", function()
    local plan = H.copy(PLANS.hobby)
    assert.is_true(P.decide({ plan = plan, request = {}, user = {} }).allowed)
    plan.max_instances = nil
    assert.is_true(P.decide({ plan = plan, request = {}, user = { instance_count = 0 } }).allowed)
    assert.is_false(P.decide({ plan = plan, request = {}, user = { instance_count = 1 } }).allowed)
  end)

  it("answers quotas as integers even when the plan carries floats", function()
    local plan = H.copy(PLANS.starter)
    plan.storage_quota_gb, plan.api_requests_quota_daily = 10.0, 100000.0
    local d = P.decide({ plan = plan, request = {}, user = { instance_count = 0 } })
    assert.are.equal("integer", math.type(d.storage_quota_gb))
    assert.are.equal("integer", math.type(d.api_requests_quota_daily))
    assert.are.equal(10, d.storage_quota_gb)
  end)

  it("passes its own examples", function()
    H.assert_examples("provisioning")
  end)

  it("is pure: no globals, no state, input untouched", function()
    H.assert_pure("provisioning")
  end)
end)
