-- provisioning.lua: which tier, compute and size a new instance gets, from its plan.
--
-- M.decide(input) -> decision
--
-- input:
--   plan     { code = string, name = string, storage_quota_gb = integer,
--              api_requests_quota_daily = integer, max_instances = integer, ... }
--            the plan row; database_tier and compute_tier may be present but are not
--            read: this policy is what decides them, from the plan code.
--   request  { name = string, subdomain = string }   (not read; passed for the record)
--   user     { instance_count = integer }   the user's live instances on this plan,
--            not counting this request (absent: 0)
--
-- output when allowed:
--   { allowed = true, database_tier = "shared"|"dedicated",
--     compute_tier = "lambda"|"container"|"dedicated", size = string,
--     storage_quota_gb = integer >= 0, api_requests_quota_daily = integer >= 0 }
-- output when refused:
--   { allowed = false, reason = string }
--
-- Rules and where the numbers come from:
--   * Tier by plan code. Spec, "Multi-Tenant Database Architecture":
--       "### Shared Tier (Hobby, Starter, Professional)"
--       "### Dedicated Tier (Business, Enterprise)"
--     An unknown code is refused ("unknown plan 'x'"), never guessed.
--   * Compute: shared -> "lambda" (the spec's step-2 INSERT writes "'shared', 'lambda'");
--     business -> "container", enterprise -> "dedicated": our defaults, the spec names
--     no compute for the dedicated tier; enterprise gets the stronger isolation.
--   * Size: "shared" for the shared tier (a database on a shared server). Dedicated
--     server classes are our defaults (the spec names none): business
--     "db.m6g.large" (2 vCPU, 8 GB), enterprise "db.r6g.2xlarge" (8 vCPU, 64 GB).
--   * Quotas are copied from the plan (spec: instances carry storage_quota_gb and
--     api_requests_quota_daily, read by "Find instances approaching quota").
--   * Refused when user.instance_count >= plan.max_instances
--     ("plan Hobby allows 1 instance"); max_instances absent means 1, the schema's
--     default for plans.max_instances.
--
-- To change a tier, compute or size: edit TIERS below. To change a quota or the
-- instance limit: edit the plan (seeds/001_plans.sql or the plans table).

local M = {}

-- plan code -> what an instance of that plan gets
local TIERS = {
  hobby        = { database_tier = "shared",    compute_tier = "lambda",    size = "shared" },
  starter      = { database_tier = "shared",    compute_tier = "lambda",    size = "shared" },
  professional = { database_tier = "shared",    compute_tier = "lambda",    size = "shared" },
  business     = { database_tier = "dedicated", compute_tier = "container", size = "db.m6g.large" },
  enterprise   = { database_tier = "dedicated", compute_tier = "dedicated", size = "db.r6g.2xlarge" },
}

-- A whole non-negative integer from a plan number (JSON may carry 10.0 for 10).
local function count(x)
  if x == nil or x < 0 then return 0 end
  return math.floor(x)
end

function M.decide(input)
  local plan = input.plan
  local tier = TIERS[plan.code]
  if tier == nil then
    return { allowed = false, reason = "unknown plan '" .. tostring(plan.code) .. "'" }
  end

  local max = plan.max_instances or 1
  local have = (input.user and input.user.instance_count) or 0
  if have >= max then
    local n = math.floor(max)
    return { allowed = false,
             reason = "plan " .. (plan.name or plan.code) .. " allows " .. n ..
                      (n == 1 and " instance" or " instances") }
  end

  return {
    allowed = true,
    database_tier = tier.database_tier,
    compute_tier = tier.compute_tier,
    size = tier.size,
    storage_quota_gb = count(plan.storage_quota_gb),
    api_requests_quota_daily = count(plan.api_requests_quota_daily),
  }
end

M.examples = {
  { fn = "decide",
    input = { plan = { code = "hobby", name = "Hobby", database_tier = "shared",
                       compute_tier = "lambda", storage_quota_gb = 1,
                       api_requests_quota_daily = 10000, max_instances = 1 },
              request = { name = "My App", subdomain = "my-app" },
              user = { instance_count = 0 } },
    output = { allowed = true, database_tier = "shared", compute_tier = "lambda",
               size = "shared", storage_quota_gb = 1, api_requests_quota_daily = 10000 } },
  { fn = "decide",
    input = { plan = { code = "enterprise", name = "Enterprise", storage_quota_gb = 1000,
                       api_requests_quota_daily = 100000000, max_instances = 100 },
              request = { name = "Big", subdomain = "big" },
              user = { instance_count = 99 } },
    output = { allowed = true, database_tier = "dedicated", compute_tier = "dedicated",
               size = "db.r6g.2xlarge", storage_quota_gb = 1000,
               api_requests_quota_daily = 100000000 } },
  -- edge: the limit is reached exactly
  { fn = "decide",
    input = { plan = { code = "hobby", name = "Hobby", storage_quota_gb = 1,
                       api_requests_quota_daily = 10000, max_instances = 1 },
              request = { name = "Second", subdomain = "second" },
              user = { instance_count = 1 } },
    output = { allowed = false, reason = "plan Hobby allows 1 instance" } },
  { fn = "decide",
    input = { plan = { code = "gold", name = "Gold", storage_quota_gb = 5,
                       api_requests_quota_daily = 5, max_instances = 1 },
              request = { name = "X", subdomain = "x" },
              user = { instance_count = 0 } },
    output = { allowed = false, reason = "unknown plan 'gold'" } },
}

return M
