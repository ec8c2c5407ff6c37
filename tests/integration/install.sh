#!/usr/bin/env bash
# `cmake --install` puts the binary and schema/, seeds/, policies/, scripts/ and the
# dashboard (examples/dashboard) under a
# prefix, and the installed binary finds them there (not in the source tree).
source "$(dirname "$0")/../support/testlib.sh"
cmake --install "${SB_BUILD_DIR:?}" --prefix "$WORK/prefix" >/dev/null
bin=$WORK/prefix/bin/solobase
[ -x "$bin" ] || fail "no installed binary"
for d in schema seeds policies scripts examples/dashboard; do
  [ -d "$WORK/prefix/share/solobase/$d" ] || fail "$d not installed"
done
cfg=$(env -u SOLOBASE_HOME "$bin" config)
expect_contains "$cfg" "home                       = $WORK/prefix/share/solobase" "installed home"
expect_contains "$cfg" "schema_dir                 = $WORK/prefix/share/solobase/schema" "installed schema"
[ -f "$WORK/prefix/share/solobase/examples/dashboard/index.html" ] || fail "dashboard not installed"
# The installed binary migrates a database from its installed schema.
db=sbtest_install_$$
fresh_db "$db"
DATABASE_URL=$(base_url "$db") env -u SOLOBASE_HOME "$bin" -q db migrate >/dev/null
expect_eq "$(psql -At "$(base_url "$db")" -c 'SELECT count(*) FROM schema_migrations')" \
  "$(ls "$SRC"/schema/*.sql | wc -l)" "installed migrations applied"
echo "ok: install layout"
