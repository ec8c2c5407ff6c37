#!/usr/bin/env bash
# The dashboard (examples/dashboard) end to end in headless Chromium: a `solobase serve` of
# this test's own (management database, data directory, local fleet), an operator token,
# and tests/browser/dashboard.test.js driving the page with playwright-core (sign in,
# events of new instances on the page, exactly once across a websocket reconnect). The
# screenshot is kept as $SB_BUILD_DIR/test-artifacts/dashboard.png. Chromium, Node.js and
# npm are required, not optional: CI installs them (.ci/packages), so missing is a failure.
source "$(dirname "$0")/../support/testlib.sh"
: "${SB_BUILD_DIR:?run through ctest}"

chromium=${CHROMIUM:-/usr/bin/chromium}
[ -x "$chromium" ] || fail "Chromium is needed at $chromium (Debian package chromium, in .ci/packages)"
command -v node >/dev/null || fail "Node.js is needed (Debian package nodejs, in .ci/packages)"
browser_dir=$SRC/tests/browser
if [ ! -d "$browser_dir/node_modules/playwright-core" ]; then
  command -v npm >/dev/null || fail "npm is needed to install playwright-core (Debian package npm)"
  (cd "$browser_dir" && npm ci --no-audit --no-fund) >"$WORK/npm.log" 2>&1 ||
    fail "npm ci in tests/browser failed: $(tail -n 20 "$WORK/npm.log")"
fi

# A management database and a data directory (engine keys, local fleet) of our own. At
# exit, before the database is dropped: the engine stops, then any server it started.
db=sbtest_browser_$$
fresh_db "$db"
export DATABASE_URL=$(base_url "$db")
export SOLOBASE_DATA_DIR=$WORK/data
"$SB" -q db migrate >/dev/null
"$SB" -q db seed >/dev/null

start_serve

email=dashboard-$$@example.com
"$SB" -q user create --email "$email" --role operator </dev/null >/dev/null
token=$("$SB" -q token create --user "$email" --scope operator 2>/dev/null)
[[ "$token" == sbt_* ]] || fail "token create printed '$token', not a token"

artifacts=$SB_BUILD_DIR/test-artifacts
mkdir -p "$artifacts"
rm -f "$artifacts/dashboard.png"
# Chromium's profile and whatever a killed browser leaves go under $WORK, removed at exit.
mkdir -p "$WORK/tmp"
set +e
TMPDIR=$WORK/tmp node "$browser_dir/dashboard.test.js" --url "http://127.0.0.1:$port/" --token "$token" \
  --screenshot "$artifacts/dashboard.png" --chromium "$chromium"
rc=$?
set -e
[ "$rc" == 0 ] || serve_failed "dashboard.test.js failed (exit $rc; screenshot: $artifacts/dashboard.png)"
[ -s "$artifacts/dashboard.png" ] || fail "no screenshot at $artifacts/dashboard.png"
echo "ok: dashboard in Chromium (screenshot: $artifacts/dashboard.png)"
