-- revenue_report.lua: revenue by month from succeeded transactions.
--
--   solobase run revenue_report
--
-- The spec's "Monthly revenue report" query, unchanged.

print(sb.pretty.format(sb.db.query([[
SELECT
  DATE_TRUNC('month', created_at) as month,
  COUNT(*) as transactions,
  SUM(amount) / 100.0 as revenue_usd,
  COUNT(DISTINCT user_id) as unique_customers
FROM transactions
WHERE status = 'succeeded'
GROUP BY DATE_TRUNC('month', created_at)
ORDER BY month DESC
]])))
