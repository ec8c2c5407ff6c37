-- Solobase Cloud management database: the tables of the specification
-- (users, plans, subscriptions, instances, shared_rds_instances, instance_usage,
-- instance_logs, instance_events, transactions, invoices, backups) and what a real
-- provisioning and billing platform needs beside them.
--
-- Plain SQL for PostgreSQL 15. It runs unchanged with
--   psql -v ON_ERROR_STOP=1 -f schema/001_initial_schema.sql
-- on an empty database, and through `solobase db migrate` (one transaction per file).
--
-- Conventions (docs/schema.md explains each choice):
--   * UUID primary keys from gen_random_uuid(); instance_events also carries seq, a
--     bigint stream position assigned in commit order, so subscribers resume by number.
--   * timestamptz everywhere; money is integer cents (bigint) in the plan's currency.
--   * every status and tier is a CHECK-constrained text column (adding a value is one
--     ALTER TABLE in a migration, unlike an enum);
--   * every foreign key is the leading column of an index, and its ON DELETE is chosen:
--     billing and audit rows RESTRICT, operational data CASCADEs with its instance;
--   * updated_at is kept by a trigger, not by callers.

CREATE FUNCTION sb_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

-- Users: customers and operators. Passwords are bcrypt ($2b$) hashes; authentication
-- itself belongs to Solobase auth, so the hash may be absent (token-only accounts).
CREATE TABLE users (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email               text NOT NULL
                      CONSTRAINT users_email_format CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 320),
  password_hash       text
                      CONSTRAINT users_password_bcrypt CHECK (password_hash ~ '^\$2[aby]\$[0-9]{2}\$[./A-Za-z0-9]{53}$'),
  name                text CONSTRAINT users_name_length CHECK (length(name) <= 200),
  role                text NOT NULL DEFAULT 'customer'
                      CONSTRAINT users_role_check CHECK (role IN ('customer', 'operator')),
  status              text NOT NULL DEFAULT 'active'
                      CONSTRAINT users_status_check CHECK (status IN ('active', 'suspended', 'deleted')),
  stripe_customer_id  text UNIQUE,
  email_verified_at   timestamptz,
  last_login_at       timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now()
);
-- One account per address, whatever its case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();

-- Plans: price, quotas and backup policy per tier. Seeds hold the five plans of the
-- spec (seeds/001_plans.sql).
CREATE TABLE plans (
  id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  code                      text NOT NULL UNIQUE
                            CONSTRAINT plans_code_format CHECK (code ~ '^[a-z][a-z0-9_]{0,62}$'),
  name                      text NOT NULL UNIQUE,
  description               text,
  database_tier             text NOT NULL
                            CONSTRAINT plans_database_tier_check CHECK (database_tier IN ('shared', 'dedicated')),
  compute_tier              text NOT NULL
                            CONSTRAINT plans_compute_tier_check CHECK (compute_tier IN ('lambda', 'container', 'dedicated')),
  price_monthly_cents       bigint NOT NULL CONSTRAINT plans_price_nonneg CHECK (price_monthly_cents >= 0),
  currency                  text NOT NULL DEFAULT 'usd'
                            CONSTRAINT plans_currency_format CHECK (currency ~ '^[a-z]{3}$'),
  stripe_product_id         text UNIQUE,
  stripe_price_id           text UNIQUE,
  storage_quota_gb          bigint NOT NULL CONSTRAINT plans_storage_quota_nonneg CHECK (storage_quota_gb >= 0),
  api_requests_quota_daily  bigint NOT NULL CONSTRAINT plans_api_quota_nonneg CHECK (api_requests_quota_daily >= 0),
  max_instances             integer NOT NULL DEFAULT 1 CONSTRAINT plans_max_instances_positive CHECK (max_instances > 0),
  -- Usage beyond the quota, per unit, in cents (0: hard quota, no overage billing).
  overage_storage_gb_month_cents   bigint NOT NULL DEFAULT 0 CONSTRAINT plans_overage_storage_nonneg CHECK (overage_storage_gb_month_cents >= 0),
  overage_api_million_cents        bigint NOT NULL DEFAULT 0 CONSTRAINT plans_overage_api_nonneg CHECK (overage_api_million_cents >= 0),
  -- Backup Strategy of the spec: snapshot interval, retention, point-in-time recovery
  -- window (the most recent writes a restore can lose).
  backup_interval_hours     integer NOT NULL CONSTRAINT plans_backup_interval_positive CHECK (backup_interval_hours > 0),
  backup_retention_days     integer NOT NULL CONSTRAINT plans_backup_retention_positive CHECK (backup_retention_days > 0),
  pitr_window_minutes       integer NOT NULL CONSTRAINT plans_pitr_window_positive CHECK (pitr_window_minutes > 0),
  is_active                 boolean NOT NULL DEFAULT true,
  sort_order                integer NOT NULL DEFAULT 0,
  created_at                timestamptz NOT NULL DEFAULT now(),
  updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER plans_updated_at BEFORE UPDATE ON plans
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();

-- Subscriptions: a user's paid plan, mirrored from Stripe (status values are Stripe's).
CREATE TABLE subscriptions (
  id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id                 uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
  plan_id                 uuid NOT NULL REFERENCES plans (id) ON DELETE RESTRICT,
  status                  text NOT NULL DEFAULT 'incomplete'
                          CONSTRAINT subscriptions_status_check CHECK (status IN
                            ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid')),
  stripe_subscription_id  text UNIQUE,
  stripe_customer_id      text,
  quantity                integer NOT NULL DEFAULT 1 CONSTRAINT subscriptions_quantity_positive CHECK (quantity > 0),
  current_period_start    timestamptz,
  current_period_end      timestamptz,
  cancel_at_period_end    boolean NOT NULL DEFAULT false,
  canceled_at             timestamptz,
  trial_end               timestamptz,
  -- Dunning: after a failed payment, service continues until this moment.
  grace_period_ends_at    timestamptz,
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT subscriptions_period_order CHECK (current_period_end > current_period_start)
);
CREATE INDEX subscriptions_user_id_idx ON subscriptions (user_id);
CREATE INDEX subscriptions_plan_id_idx ON subscriptions (plan_id);
-- At most one live subscription per user and plan.
CREATE UNIQUE INDEX subscriptions_one_live_per_plan ON subscriptions (user_id, plan_id)
  WHERE status IN ('incomplete', 'trialing', 'active', 'past_due', 'unpaid');
CREATE TRIGGER subscriptions_updated_at BEFORE UPDATE ON subscriptions
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();

-- Shared database servers ("shared RDS"): up to max_databases customer databases each.
-- current_databases is changed only by conditional atomic updates (docs/schema.md), and
-- the CHECK makes over-allocation impossible even for a buggy caller.
CREATE TABLE shared_rds_instances (
  id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  rds_instance_id         text NOT NULL UNIQUE,   -- AWS DB identifier, or the local cluster's name
  driver                  text NOT NULL DEFAULT 'local'
                          CONSTRAINT shared_rds_driver_check CHECK (driver IN ('local', 'aws')),
  region                  text NOT NULL DEFAULT 'local',
  host                    text,
  port                    integer CONSTRAINT shared_rds_port_range CHECK (port BETWEEN 1 AND 65535),
  pooler_port             integer CONSTRAINT shared_rds_pooler_port_range CHECK (pooler_port BETWEEN 1 AND 65535),
  instance_class          text,
  engine_version          text,
  status                  text NOT NULL DEFAULT 'provisioning'
                          CONSTRAINT shared_rds_status_check CHECK (status IN
                            ('provisioning', 'active', 'degraded', 'draining', 'retired', 'failed')),
  current_databases       integer NOT NULL DEFAULT 0 CONSTRAINT shared_rds_current_nonneg CHECK (current_databases >= 0),
  max_databases           integer NOT NULL DEFAULT 150 CONSTRAINT shared_rds_max_positive CHECK (max_databases > 0),
  storage_used_gb         numeric(14,3) NOT NULL DEFAULT 0 CONSTRAINT shared_rds_storage_used_nonneg CHECK (storage_used_gb >= 0),
  storage_total_gb        numeric(14,3) NOT NULL DEFAULT 100 CONSTRAINT shared_rds_storage_total_positive CHECK (storage_total_gb > 0),
  admin_user              text,
  admin_password_enc      bytea,                  -- AES-256-GCM under the master key
  secret_key_id           text,                   -- which master key encrypted it
  last_health_check_at    timestamptz,
  last_health_error       text,
  consecutive_failures    integer NOT NULL DEFAULT 0 CONSTRAINT shared_rds_failures_nonneg CHECK (consecutive_failures >= 0),
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT shared_rds_capacity CHECK (current_databases <= max_databases)
) WITH (fillfactor = 50);
-- No index on current_databases or status: the table holds a few hundred servers at
-- most, and every provisioning updates current_databases. Unindexed, those updates are
-- HOT (heap-only, with room kept on each page by the fillfactor), so the hot rows do
-- not bloat the table or its indexes under load.
CREATE TRIGGER shared_rds_instances_updated_at BEFORE UPDATE ON shared_rds_instances
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();

-- Dedicated database servers: one per Business or Enterprise instance.
CREATE TABLE dedicated_rds_instances (
  id                      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  rds_instance_id         text NOT NULL UNIQUE,
  driver                  text NOT NULL DEFAULT 'local'
                          CONSTRAINT dedicated_rds_driver_check CHECK (driver IN ('local', 'aws')),
  region                  text NOT NULL DEFAULT 'local',
  host                    text,
  port                    integer CONSTRAINT dedicated_rds_port_range CHECK (port BETWEEN 1 AND 65535),
  instance_class          text,
  engine_version          text,
  status                  text NOT NULL DEFAULT 'provisioning'
                          CONSTRAINT dedicated_rds_status_check CHECK (status IN
                            ('provisioning', 'active', 'degraded', 'stopped', 'retired', 'failed')),
  storage_used_gb         numeric(14,3) NOT NULL DEFAULT 0 CONSTRAINT dedicated_rds_storage_used_nonneg CHECK (storage_used_gb >= 0),
  storage_total_gb        numeric(14,3) NOT NULL DEFAULT 100 CONSTRAINT dedicated_rds_storage_total_positive CHECK (storage_total_gb > 0),
  admin_user              text,
  admin_password_enc      bytea,
  secret_key_id           text,
  last_health_check_at    timestamptz,
  last_health_error       text,
  consecutive_failures    integer NOT NULL DEFAULT 0 CONSTRAINT dedicated_rds_failures_nonneg CHECK (consecutive_failures >= 0),
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER dedicated_rds_instances_updated_at BEFORE UPDATE ON dedicated_rds_instances
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();

-- Customer instances. The spec's provisioning INSERT names only some columns, so every
-- other one is nullable or has a default (quotas default to the Hobby plan's until the
-- provisioning policy sets them). storage_quota_gb is bigint because the spec's quota
-- query multiplies it by 1073741824, which overflows integer from 2 GB up.
CREATE TABLE instances (
  id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id                   uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
  plan_id                   uuid REFERENCES plans (id) ON DELETE RESTRICT,
  subscription_id           uuid REFERENCES subscriptions (id) ON DELETE SET NULL,
  name                      text NOT NULL CONSTRAINT instances_name_length CHECK (length(name) BETWEEN 1 AND 100),
  subdomain                 text NOT NULL UNIQUE
                            CONSTRAINT instances_subdomain_format CHECK (subdomain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
  status                    text NOT NULL DEFAULT 'requested'
                            CONSTRAINT instances_status_check CHECK (status IN
                              ('requested', 'provisioning', 'active', 'failed', 'suspended', 'deleting', 'deleted')),
  status_reason             text,
  database_tier             text NOT NULL DEFAULT 'shared'
                            CONSTRAINT instances_database_tier_check CHECK (database_tier IN ('shared', 'dedicated')),
  compute_tier              text NOT NULL DEFAULT 'lambda'
                            CONSTRAINT instances_compute_tier_check CHECK (compute_tier IN ('lambda', 'container', 'dedicated')),
  region                    text NOT NULL DEFAULT 'local',
  shared_rds_id             uuid REFERENCES shared_rds_instances (id) ON DELETE RESTRICT,
  dedicated_rds_id          uuid REFERENCES dedicated_rds_instances (id) ON DELETE RESTRICT,
  database_name             text CONSTRAINT instances_database_name_format CHECK (database_name ~ '^[a-z_][a-z0-9_]{0,62}$'),
  database_user             text CONSTRAINT instances_database_user_format CHECK (database_user ~ '^[a-z_][a-z0-9_]{0,62}$'),
  database_host             text,   -- what customers connect to (PgBouncer for shared)
  database_port             integer CONSTRAINT instances_database_port_range CHECK (database_port BETWEEN 1 AND 65535),
  database_password_enc     bytea,  -- AES-256-GCM under the master key
  secret_key_id             text,
  storage_used_bytes        bigint NOT NULL DEFAULT 0 CONSTRAINT instances_storage_used_nonneg CHECK (storage_used_bytes >= 0),
  storage_quota_gb          bigint NOT NULL DEFAULT 1 CONSTRAINT instances_storage_quota_nonneg CHECK (storage_quota_gb >= 0),
  api_requests_today        bigint NOT NULL DEFAULT 0 CONSTRAINT instances_api_today_nonneg CHECK (api_requests_today >= 0),
  api_requests_quota_daily  bigint NOT NULL DEFAULT 10000 CONSTRAINT instances_api_quota_nonneg CHECK (api_requests_quota_daily >= 0),
  api_requests_day          date NOT NULL DEFAULT CURRENT_DATE,  -- the day api_requests_today counts
  quota_status              text NOT NULL DEFAULT 'ok'
                            CONSTRAINT instances_quota_status_check CHECK (quota_status IN ('ok', 'warning', 'exceeded')),
  provisioned_at            timestamptz,
  suspended_at              timestamptz,
  deleted_at                timestamptz,
  created_at                timestamptz NOT NULL DEFAULT now(),
  updated_at                timestamptz NOT NULL DEFAULT now(),
  -- A shared instance lives on a shared server, a dedicated one on its own.
  CONSTRAINT instances_tier_server CHECK (
    (database_tier = 'shared' AND dedicated_rds_id IS NULL) OR
    (database_tier = 'dedicated' AND shared_rds_id IS NULL)),
  -- Names are unique per server: databases and roles share the server's namespace.
  CONSTRAINT instances_database_name_per_server UNIQUE (shared_rds_id, database_name),
  CONSTRAINT instances_database_user_per_server UNIQUE (shared_rds_id, database_user)
);
-- (user_id, plan_id): the provisioning policy counts a user's instances on a plan.
CREATE INDEX instances_user_id_idx ON instances (user_id, plan_id);
CREATE INDEX instances_plan_id_idx ON instances (plan_id);
-- Foreign keys that are NULL for most rows get partial indexes: a lookup by a value
-- (what ON DELETE and joins do) uses them, and inserts of NULL rows skip them.
CREATE INDEX instances_subscription_id_idx ON instances (subscription_id) WHERE subscription_id IS NOT NULL;
CREATE UNIQUE INDEX instances_dedicated_rds_id_key ON instances (dedicated_rds_id) WHERE dedicated_rds_id IS NOT NULL;
CREATE INDEX instances_status_idx ON instances (status);
CREATE TRIGGER instances_updated_at BEFORE UPDATE ON instances
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();

-- Daily usage per instance, the input of billing. One row per instance and day; the
-- spec's upsert adds api_requests and replaces the byte counts.
CREATE TABLE instance_usage (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  instance_id     uuid NOT NULL REFERENCES instances (id) ON DELETE RESTRICT,
  date            date NOT NULL,
  api_requests    bigint NOT NULL DEFAULT 0 CONSTRAINT instance_usage_api_nonneg CHECK (api_requests >= 0),
  storage_bytes   bigint NOT NULL DEFAULT 0 CONSTRAINT instance_usage_storage_nonneg CHECK (storage_bytes >= 0),
  database_bytes  bigint NOT NULL DEFAULT 0 CONSTRAINT instance_usage_database_nonneg CHECK (database_bytes >= 0),
  bandwidth_bytes bigint NOT NULL DEFAULT 0 CONSTRAINT instance_usage_bandwidth_nonneg CHECK (bandwidth_bytes >= 0),
  compute_hours   numeric(12,4) NOT NULL DEFAULT 0 CONSTRAINT instance_usage_compute_nonneg CHECK (compute_hours >= 0),
  total_cost      bigint NOT NULL DEFAULT 0 CONSTRAINT instance_usage_cost_nonneg CHECK (total_cost >= 0),  -- cents
  created_at      timestamptz NOT NULL DEFAULT now(),
  updated_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT instance_usage_instance_date_key UNIQUE (instance_id, date)
);
CREATE INDEX instance_usage_date_idx ON instance_usage (date);
CREATE TRIGGER instance_usage_updated_at BEFORE UPDATE ON instance_usage
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();

-- Logs and errors of an instance: operational data, archived after 90 days.
CREATE TABLE instance_logs (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  instance_id  uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
  level        text NOT NULL DEFAULT 'info'
               CONSTRAINT instance_logs_level_check CHECK (level IN ('debug', 'info', 'warning', 'error', 'fatal')),
  source       text,
  message      text NOT NULL,
  context      jsonb,
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_logs_instance_id_idx ON instance_logs (instance_id, created_at);
CREATE INDEX instance_logs_created_at_idx ON instance_logs (created_at);

-- Audit log of everything that happens to instances and the fleet, and the source of
-- the event stream (docs/events.md). instance_id is NULL for fleet-wide events (a new
-- shared server, a policy that failed to reload). seq is the stream position, set at
-- commit time in commit order by the trigger below; ids are never reused.
CREATE SEQUENCE instance_events_seq_seq AS bigint;
CREATE TABLE instance_events (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  seq             bigint UNIQUE,
  instance_id     uuid REFERENCES instances (id) ON DELETE RESTRICT,
  user_id         uuid REFERENCES users (id) ON DELETE RESTRICT,
  shared_rds_id   uuid REFERENCES shared_rds_instances (id) ON DELETE RESTRICT,
  event_type      text NOT NULL
                  CONSTRAINT instance_events_type_format CHECK (event_type ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$'),
  description     text,
  payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
  actor           text,
  created_at      timestamptz NOT NULL DEFAULT now()
);
ALTER SEQUENCE instance_events_seq_seq OWNED BY instance_events.seq;
CREATE INDEX instance_events_instance_id_idx ON instance_events (instance_id, seq);
CREATE INDEX instance_events_user_id_idx ON instance_events (user_id, seq);
CREATE INDEX instance_events_shared_rds_id_idx ON instance_events (shared_rds_id) WHERE shared_rds_id IS NOT NULL;
CREATE INDEX instance_events_created_at_idx ON instance_events (created_at);

-- Stream order is commit order: the position is taken at commit (a deferred trigger)
-- under a transaction-scoped lock, so a transaction that commits later always gets a
-- higher seq and a reader that has seen seq N has seen every committed event below N.
-- PostgreSQL's own NOTIFY already serialises committing notifiers the same way, so
-- the lock costs event writers nothing more. The NOTIFY wakes every engine process.
CREATE FUNCTION sb_instance_events_sequence() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  pos bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(6012680095412830211);  -- SB_LOCK_EVENTS in core/locks.h
  pos := nextval('instance_events_seq_seq');
  UPDATE instance_events SET seq = pos WHERE id = NEW.id;
  PERFORM pg_notify('sb_events', pos::text);
  RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER instance_events_sequence
  AFTER INSERT ON instance_events
  DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW EXECUTE FUNCTION sb_instance_events_sequence();

-- Invoices: one per subscription and billing period (so monthly invoicing is
-- idempotent), with its lines as computed by the pricing policy.
CREATE TABLE invoices (
  id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id             uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
  subscription_id     uuid REFERENCES subscriptions (id) ON DELETE SET NULL,
  number              text UNIQUE,
  status              text NOT NULL DEFAULT 'draft'
                      CONSTRAINT invoices_status_check CHECK (status IN ('draft', 'open', 'paid', 'void', 'uncollectible')),
  period_start        date NOT NULL,
  period_end          date NOT NULL,
  currency            text NOT NULL DEFAULT 'usd' CONSTRAINT invoices_currency_format CHECK (currency ~ '^[a-z]{3}$'),
  subtotal            bigint NOT NULL DEFAULT 0 CONSTRAINT invoices_subtotal_nonneg CHECK (subtotal >= 0),
  tax                 bigint NOT NULL DEFAULT 0 CONSTRAINT invoices_tax_nonneg CHECK (tax >= 0),
  total               bigint NOT NULL DEFAULT 0 CONSTRAINT invoices_total_nonneg CHECK (total >= 0),
  amount_paid         bigint NOT NULL DEFAULT 0 CONSTRAINT invoices_paid_nonneg CHECK (amount_paid >= 0),
  amount_due          bigint NOT NULL DEFAULT 0 CONSTRAINT invoices_due_nonneg CHECK (amount_due >= 0),
  lines               jsonb NOT NULL DEFAULT '[]'::jsonb CONSTRAINT invoices_lines_array CHECK (jsonb_typeof(lines) = 'array'),
  stripe_invoice_id   text UNIQUE,
  hosted_invoice_url  text,
  due_at              timestamptz,
  paid_at             timestamptz,
  created_at          timestamptz NOT NULL DEFAULT now(),
  updated_at          timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT invoices_period_order CHECK (period_end > period_start),
  CONSTRAINT invoices_total_sum CHECK (total = subtotal + tax),
  CONSTRAINT invoices_one_per_period UNIQUE (subscription_id, period_start)
);
CREATE INDEX invoices_user_id_idx ON invoices (user_id, period_start);
CREATE TRIGGER invoices_updated_at BEFORE UPDATE ON invoices
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();

-- Payment transactions (charges, refunds). amount is in cents; revenue counts
-- status = 'succeeded' only.
CREATE TABLE transactions (
  id                        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id                   uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
  subscription_id           uuid REFERENCES subscriptions (id) ON DELETE SET NULL,
  invoice_id                uuid REFERENCES invoices (id) ON DELETE SET NULL,
  type                      text NOT NULL DEFAULT 'charge'
                            CONSTRAINT transactions_type_check CHECK (type IN ('charge', 'refund', 'credit', 'adjustment')),
  status                    text NOT NULL DEFAULT 'pending'
                            CONSTRAINT transactions_status_check CHECK (status IN ('pending', 'succeeded', 'failed', 'refunded', 'canceled')),
  amount                    bigint NOT NULL CONSTRAINT transactions_amount_nonneg CHECK (amount >= 0),
  currency                  text NOT NULL DEFAULT 'usd' CONSTRAINT transactions_currency_format CHECK (currency ~ '^[a-z]{3}$'),
  description               text,
  stripe_payment_intent_id  text UNIQUE,
  stripe_charge_id          text UNIQUE,
  failure_code              text,
  failure_message           text,
  created_at                timestamptz NOT NULL DEFAULT now(),
  updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX transactions_user_id_idx ON transactions (user_id);
CREATE INDEX transactions_subscription_id_idx ON transactions (subscription_id);
CREATE INDEX transactions_invoice_id_idx ON transactions (invoice_id);
-- The monthly revenue report scans succeeded transactions by time.
CREATE INDEX transactions_succeeded_created_at_idx ON transactions (created_at) WHERE status = 'succeeded';
CREATE TRIGGER transactions_updated_at BEFORE UPDATE ON transactions
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();

-- Backups of instances: automatic (scheduled by the backups policy), manual (kept 90
-- days), and the final one taken before a deletion. s3_bucket/s3_key locate the archive
-- (a folder and file name for the local driver).
CREATE TABLE backups (
  id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  instance_id       uuid NOT NULL REFERENCES instances (id) ON DELETE RESTRICT,
  backup_type       text NOT NULL
                    CONSTRAINT backups_type_check CHECK (backup_type IN ('automatic', 'manual', 'pre_delete')),
  status            text NOT NULL DEFAULT 'pending'
                    CONSTRAINT backups_status_check CHECK (status IN ('pending', 'in_progress', 'completed', 'failed', 'expired', 'deleted')),
  size_bytes        bigint CONSTRAINT backups_size_nonneg CHECK (size_bytes >= 0),
  s3_bucket         text,
  s3_key            text,
  checksum_sha256   text CONSTRAINT backups_checksum_format CHECK (checksum_sha256 ~ '^[0-9a-f]{64}$'),
  error             text,
  started_at        timestamptz NOT NULL DEFAULT now(),
  completed_at      timestamptz,
  expires_at        timestamptz,
  verified_at       timestamptz,   -- last successful restore test
  created_at        timestamptz NOT NULL DEFAULT now(),
  updated_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT backups_completed_has_location CHECK (status <> 'completed' OR (completed_at IS NOT NULL AND s3_key IS NOT NULL)),
  CONSTRAINT backups_expiry_after_completion CHECK (expires_at IS NULL OR completed_at IS NULL OR expires_at > completed_at)
);
CREATE INDEX backups_instance_id_idx ON backups (instance_id, started_at);
-- The expiry job looks for completed backups past expires_at.
CREATE INDEX backups_expiry_idx ON backups (expires_at) WHERE status = 'completed';
CREATE TRIGGER backups_updated_at BEFORE UPDATE ON backups
  FOR EACH ROW EXECUTE FUNCTION sb_set_updated_at();
