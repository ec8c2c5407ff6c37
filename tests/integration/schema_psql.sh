#!/usr/bin/env bash
# The schema and seeds run by plain `psql -v ON_ERROR_STOP=1 -f` on an empty database,
# as the specification shows, and running the seeds twice changes nothing.
source "$(dirname "$0")/../support/testlib.sh"
db=sbtest_psql_$$
fresh_db "$db"
url=$(base_url "$db")
for f in "$SRC"/schema/*.sql; do
  psql -q -v ON_ERROR_STOP=1 "$url" -f "$f" >/dev/null || fail "psql -f $f"
done
psql -q -v ON_ERROR_STOP=1 "$url" -f "$SRC/seeds/001_plans.sql" >/dev/null
before=$(psql -At "$url" -c "SELECT string_agg(code || ':' || xmin || ':' || updated_at, ',' ORDER BY code) FROM plans")
psql -q -v ON_ERROR_STOP=1 "$url" -f "$SRC/seeds/001_plans.sql" >/dev/null
after=$(psql -At "$url" -c "SELECT string_agg(code || ':' || xmin || ':' || updated_at, ',' ORDER BY code) FROM plans")
expect_eq "$after" "$before" "second seed run changed rows"
expect_eq "$(psql -At "$url" -c 'SELECT count(*) FROM plans')" 5 "plan count"
expect_eq "$(psql -At "$url" -c "SELECT string_agg(name, ',' ORDER BY sort_order) FROM plans")" \
  "Hobby,Starter,Professional,Business,Enterprise" "plan names"
tables=$(psql -At "$url" -c "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'")
for t in users plans subscriptions instances shared_rds_instances instance_usage instance_logs \
         instance_events transactions invoices backups; do
  expect_contains ",$tables," ",$t," "table $t exists"
done
echo "ok: schema and seeds by psql -f, seeds idempotent"
