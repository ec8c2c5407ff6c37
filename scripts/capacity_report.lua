-- capacity_report.lua: shared database servers and how full they are.
--
--   solobase run capacity_report
--
-- Runs the spec's "Check shared RDS capacity" query unchanged, prints it, then asks
-- the placement policy whether a new shared server should be opened (the spec: "When
-- reaching 80% capacity (120 databases), create new shared RDS").

local rows = sb.db.query([[
SELECT
  rds_instance_id,
  current_databases,
  max_databases,
  ROUND(100.0 * current_databases / max_databases, 2) as usage_percentage,
  storage_used_gb,
  storage_total_gb,
  status
FROM shared_rds_instances
ORDER BY usage_percentage DESC
]])
print(sb.pretty.format(rows))

local servers = sb.db.query([[
SELECT id::text, status, current_databases, max_databases,
       storage_used_gb::float8 AS storage_used_gb, storage_total_gb::float8 AS storage_total_gb
FROM shared_rds_instances WHERE status IN ('active', 'degraded', 'draining')
]])
local list = {}
for i, s in ipairs(servers) do list[i] = s end
local answer = sb.policy.call("placement", "place",
  { request = { storage_quota_gb = 1 }, servers = list, opening = false })
if answer.open_new_server then
  print(string.format("placement policy: open a new shared server (max %d databases)",
    answer.new_server.max_databases))
else
  print("placement policy: capacity is sufficient")
end
