-- The five plans of the specification: Hobby, Starter and Professional on the shared
-- tier, Business and Enterprise on dedicated servers. Backup interval, retention and
-- point-in-time-recovery window follow the spec's Backup Strategy (shared: every 24 h,
-- kept 7 days, PITR 5 minutes; dedicated: every 6 h, kept 30 days, PITR 1 minute).
-- Prices and quotas are the launch price list (docs/schema.md).
--
-- Idempotent: a plan is matched by code and rewritten only when a value differs, so
-- running this file twice changes nothing (not even updated_at).
INSERT INTO plans (code, name, description, database_tier, compute_tier, price_monthly_cents,
                   storage_quota_gb, api_requests_quota_daily, max_instances,
                   overage_storage_gb_month_cents, overage_api_million_cents,
                   backup_interval_hours, backup_retention_days, pitr_window_minutes, sort_order)
VALUES
  ('hobby',        'Hobby',        'Side projects: one small database on a shared server',
   'shared',    'lambda',         0,      1,     10000,   1,    0,    0, 24,  7, 5, 10),
  ('starter',      'Starter',      'Small production apps on a shared server',
   'shared',    'lambda',      2900,     10,    100000,   3,   25,  100, 24,  7, 5, 20),
  ('professional', 'Professional', 'Growing apps: more storage and requests, still shared',
   'shared',    'lambda',      9900,     50,   1000000,  10,   20,   80, 24,  7, 5, 30),
  ('business',     'Business',     'A dedicated database server per instance',
   'dedicated', 'container',  49900,    250,  10000000,  25,   15,   50,  6, 30, 1, 40),
  ('enterprise',   'Enterprise',   'Dedicated servers with the largest quotas',
   'dedicated', 'dedicated', 199900,   1000, 100000000, 100,   10,   25,  6, 30, 1, 50)
ON CONFLICT (code) DO UPDATE SET
  name = EXCLUDED.name,
  description = EXCLUDED.description,
  database_tier = EXCLUDED.database_tier,
  compute_tier = EXCLUDED.compute_tier,
  price_monthly_cents = EXCLUDED.price_monthly_cents,
  storage_quota_gb = EXCLUDED.storage_quota_gb,
  api_requests_quota_daily = EXCLUDED.api_requests_quota_daily,
  max_instances = EXCLUDED.max_instances,
  overage_storage_gb_month_cents = EXCLUDED.overage_storage_gb_month_cents,
  overage_api_million_cents = EXCLUDED.overage_api_million_cents,
  backup_interval_hours = EXCLUDED.backup_interval_hours,
  backup_retention_days = EXCLUDED.backup_retention_days,
  pitr_window_minutes = EXCLUDED.pitr_window_minutes,
  sort_order = EXCLUDED.sort_order
WHERE (plans.name, plans.description, plans.database_tier, plans.compute_tier,
       plans.price_monthly_cents, plans.storage_quota_gb, plans.api_requests_quota_daily,
       plans.max_instances, plans.overage_storage_gb_month_cents, plans.overage_api_million_cents,
       plans.backup_interval_hours, plans.backup_retention_days, plans.pitr_window_minutes,
       plans.sort_order)
  IS DISTINCT FROM
      (EXCLUDED.name, EXCLUDED.description, EXCLUDED.database_tier, EXCLUDED.compute_tier,
       EXCLUDED.price_monthly_cents, EXCLUDED.storage_quota_gb, EXCLUDED.api_requests_quota_daily,
       EXCLUDED.max_instances, EXCLUDED.overage_storage_gb_month_cents, EXCLUDED.overage_api_million_cents,
       EXCLUDED.backup_interval_hours, EXCLUDED.backup_retention_days, EXCLUDED.pitr_window_minutes,
       EXCLUDED.sort_order);
