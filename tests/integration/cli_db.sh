#!/usr/bin/env bash
# `solobase db init|migrate|seed|status` against a server given by DATABASE_URL, and the
# embedded cluster's start/stop: migrate twice (second a no-op), concurrent migrators,
# an edited applied migration refused, `token create --expires` in the past refused,
# --help everywhere, one-line errors.
source "$(dirname "$0")/../support/testlib.sh"
db=sbtest_cli_$$
psql -q "$(base_url postgres)" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
cleanup_hooks+=("psql -q '$(base_url postgres)' -c 'DROP DATABASE IF EXISTS $db WITH (FORCE)' >/dev/null")
export DATABASE_URL=$(base_url "$db")

# Before init: a clear one-line error, nothing created.
expect_exit 1 "$SB" db migrate
expect_contains "$out" "does not exist" "migrate before init"
expect_eq "$(wc -l <<<"$out")" 1 "error is one line"

expect_exit 0 "$SB" -q db init
expect_contains "$out" "created" "db init"
expect_exit 0 "$SB" -q db init
expect_contains "$out" "ready" "db init is idempotent"

expect_exit 1 "$SB" -q db seed
expect_contains "$out" "run \`solobase db migrate\` first" "seed before migrate"

expect_exit 0 "$SB" -q db migrate
expect_contains "$out" "applied" "first migrate"
expect_exit 0 "$SB" -q db migrate
expect_contains "$out" "nothing to migrate" "second migrate is a no-op"
expect_eq "$(psql -At "$DATABASE_URL" -c 'SELECT count(*) FROM schema_migrations')" \
  "$(ls "$SRC"/schema/*.sql | wc -l)" "one row per migration"
expect_exit 0 "$SB" -q db seed
expect_exit 0 "$SB" -q db seed
expect_eq "$(psql -At "$DATABASE_URL" -c 'SELECT count(*) FROM plans')" 5 "plans after two seeds"
expect_exit 0 "$SB" -q db status
expect_contains "$out" "applied  001_initial_schema.sql" "status lists applied"
expect_contains "$out" "0 pending" "nothing pending"

# `token create --expires`: a time to come; zero or less (a token expired when printed)
# is refused with a one-line error, and no token is made.
expect_exit 0 "$SB" -q user create --email tok@example.com
for e in -1d 0s 0 "-5 minutes" "1 day -25 hours"; do
  expect_exit 1 "$SB" -q token create --user tok@example.com --expires "$e"
  expect_contains "$out" "must be a time to come" "--expires '$e' refused"
  expect_eq "$(wc -l <<<"$out")" 1 "--expires '$e': error is one line"
done
expect_exit 1 "$SB" -q token create --user tok@example.com --expires soon
expect_contains "$out" "is not an interval" "--expires soon refused"
expect_eq "$(psql -At "$DATABASE_URL" -c 'SELECT count(*) FROM api_tokens')" 0 "no token made"
expect_exit 0 "$SB" -q token create --user tok@example.com --expires 90d
expect_contains "$out" "sbt_" "a token for 90 days"
expect_eq "$(psql -At "$DATABASE_URL" -c "SELECT count(*) FROM api_tokens WHERE expires_at > now() + interval '89 days'")" \
  1 "it expires in 90 days"

# A copy of schema/ with an applied file edited: refused, nothing changes.
cp -r "$SRC/schema" "$WORK/schema"
export SOLOBASE_SCHEMA_DIR=$WORK/schema
echo "-- edited" >> "$WORK/schema/001_initial_schema.sql"
printf 'CREATE TABLE sbtest_new (id int);\n' > "$WORK/schema/999_new.sql"
expect_exit 1 "$SB" -q db migrate
expect_contains "$out" "001_initial_schema.sql changed after it was applied" "edited file refused"
expect_eq "$(wc -l <<<"$out")" 1 "error is one line"
expect_eq "$(psql -At "$DATABASE_URL" -c "SELECT to_regclass('sbtest_new') IS NULL")" t \
  "nothing applied after a refusal"
expect_exit 1 "$SB" -q db status
expect_contains "$out" "CHANGED  001_initial_schema.sql" "status marks the edit"
expect_contains "$out" "pending  999_new.sql" "status lists pending"

# Restored: the new file applies. A file slotted before it later is refused.
cp "$SRC/schema/001_initial_schema.sql" "$WORK/schema/"
expect_exit 0 "$SB" -q db migrate
expect_contains "$out" "applied 1 migration" "new migration applied"
printf 'SELECT 1;\n' > "$WORK/schema/500_late.sql"
expect_exit 1 "$SB" -q db migrate
expect_contains "$out" "sorts before the applied 999_new.sql" "out-of-order file refused"
rm "$WORK/schema/500_late.sql"
printf 'SELECT 1;\n' > "$WORK/schema/badname.sql"
expect_exit 1 "$SB" -q db migrate
expect_contains "$out" "name it NNN_name.sql" "badly named file refused"
rm "$WORK/schema/badname.sql"

# A failing migration rolls back entirely and is not recorded.
printf 'CREATE TABLE sbtest_half (id int);\nSELECT no_such_function();\n' > "$WORK/schema/1000_broken.sql"
expect_exit 1 "$SB" -q db migrate
expect_contains "$out" "1000_broken.sql: line 2:" "error names file and line"
expect_eq "$(psql -At "$DATABASE_URL" -c "SELECT to_regclass('sbtest_half') IS NULL")" t "rolled back"
expect_eq "$(psql -At "$DATABASE_URL" -c "SELECT count(*) FROM schema_migrations WHERE name = '1000_broken.sql'")" 0 "not recorded"
rm "$WORK/schema/1000_broken.sql"
unset SOLOBASE_SCHEMA_DIR

# Four `db init && db migrate` at once from nothing: the database is created once (the
# losers of the CREATE DATABASE race succeed too) and each migration applied exactly once.
db2=${db}_race
psql -q "$(base_url postgres)" -c "DROP DATABASE IF EXISTS $db2 WITH (FORCE)" >/dev/null
cleanup_hooks+=("psql -q '$(base_url postgres)' -c 'DROP DATABASE IF EXISTS $db2 WITH (FORCE)' >/dev/null")
pids=()
for i in 1 2 3 4; do
  (export DATABASE_URL=$(base_url "$db2"); "$SB" -q db init && "$SB" -q db migrate) >"$WORK/race.$i" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent migrate failed: $(cat "$WORK"/race.*)"; done
expect_eq "$(grep -l '^applied' "$WORK"/race.* | wc -l)" 1 "exactly one migrator applied"
expect_eq "$(grep -l '^created' "$WORK"/race.* | wc -l)" 1 "exactly one init created the database"
expect_eq "$(psql -At "$(base_url "$db2")" -c 'SELECT count(*) FROM schema_migrations')" \
  "$(ls "$SRC"/schema/*.sql | wc -l)" "each migration recorded once"

# --help on every command, usage errors exit 2.
for c in "" "db" "db init" "db migrate" "db seed" "db status" "db start" "db stop" "db url" "config"; do
  expect_exit 0 "$SB" $c --help
  expect_contains "$out" "usage: solobase" "--help of '$c'"
done
expect_exit 2 "$SB" frobnicate
expect_exit 2 "$SB" db frobnicate
expect_exit 2 "$SB" db migrate extra-arg
for c in "--bogus" "db migrate --bogus" "db status -z" "policy check --bogus" "run -z x.lua"; do
  expect_exit 2 "$SB" $c
  expect_eq "$(wc -l <<<"$out")" 1 "bad option of '$c' is one line"
  expect_contains "$out" "bad or incomplete option" "bad option of '$c' named"
done

# The embedded cluster: started on first use, stopped by `db stop`, started again.
unset DATABASE_URL
export SOLOBASE_DATA_DIR=$WORK/embedded
export SOLOBASE_DATABASE_NAME=solobase_saas
cleanup_hooks+=("'$SRC/tests/support/stop-servers' '$WORK/embedded'")
expect_exit 0 "$SB" -q db status
expect_contains "$out" "pending  001_initial_schema.sql" "embedded: fresh cluster, pending"
url=$("$SB" db url)
expect_contains "$url" "@127.0.0.1:" "embedded listens on loopback"
expect_eq "$(psql -At "$url" -c 'SHOW listen_addresses')" "127.0.0.1" "loopback only"
expect_exit 2 psql -At "${url/:\/\/solobase:*@/://solobase:wrong@}" -c 'SELECT 1'
expect_contains "$out" "password authentication failed" "password required"
expect_exit 0 "$SB" -q db stop
expect_exit 2 psql -At "$url" -c 'SELECT 1'
expect_exit 0 "$SB" -q db migrate
expect_exit 0 "$SB" -q db seed
expect_eq "$(psql -At "$("$SB" db url)" -c 'SELECT count(*) FROM plans')" 5 "embedded: seeded"
expect_exit 0 "$SB" -q db stop
expect_exit 0 "$SB" -q db stop
echo "ok: db init/migrate/seed/status/start/stop"
