-- quota_report.lua: instances approaching their storage or API-request quota.
--
--   solobase run quota_report
--
-- Runs the spec's "Find instances approaching quota" query unchanged (it lists usage
-- strictly above 90 %), and adds the quotas policy's verdict for each instance (which
-- also counts exactly 90 % as a warning; see docs/policies.md).

local rows = sb.db.query([[
SELECT
  i.id,
  i.name,
  i.subdomain,
  u.email,
  i.storage_used_bytes / 1073741824.0 as storage_gb,
  i.storage_quota_gb,
  i.api_requests_today,
  i.api_requests_quota_daily
FROM instances i
JOIN users u ON i.user_id = u.id
WHERE
  (i.storage_used_bytes > i.storage_quota_gb * 1073741824 * 0.9)
  OR (i.api_requests_today > i.api_requests_quota_daily * 0.9)
ORDER BY u.email
]])

-- The policy wants bytes as integers; the report shows GB.
local ids = {}
for i, r in ipairs(rows) do ids[i] = r.id end
local bytes = {}
for _, b in ipairs(sb.db.query("SELECT id, storage_used_bytes FROM instances WHERE id = ANY($1::uuid[])",
                               "{" .. table.concat(ids, ",") .. "}")) do
  bytes[b.id] = b.storage_used_bytes
end

local verdicts = {}
for _, r in ipairs(rows) do
  local v = sb.policy.call("quotas", "check", {
    quotas = { storage_gb = r.storage_quota_gb, api_requests_daily = r.api_requests_quota_daily },
    usage = { storage_bytes = bytes[r.id], api_requests_today = r.api_requests_today },
  })
  verdicts[#verdicts + 1] = {
    subdomain = r.subdomain, email = r.email, storage_gb = r.storage_gb,
    storage_quota_gb = r.storage_quota_gb, api_requests_today = r.api_requests_today,
    api_requests_quota_daily = r.api_requests_quota_daily,
    status = v.status, action = v.action, resource = v.resource or "",
  }
end
setmetatable(verdicts, { __name = "sb.db.rows", __index = { columns = {
  "subdomain", "email", "storage_gb", "storage_quota_gb", "api_requests_today",
  "api_requests_quota_daily", "status", "action", "resource" } } })
print(sb.pretty.format(verdicts))
