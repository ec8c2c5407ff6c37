# Shared by the shell integration tests (sourced, not run): paths, a fresh database on
# the run's cluster, and assertions that print what they expected.
set -euo pipefail
: "${SOLOBASE_BIN:?run through ctest}" "${SOLOBASE_DATA_DIR:?run through ctest}"
SB=$SOLOBASE_BIN
SRC=${SB_SOURCE_DIR:?}
ADMIN_URL=$("$SB" db url)       # the template database; never connect to it for long
base_url() { echo "${ADMIN_URL%/*}/$1"; }
WORK=$(mktemp -d /tmp/sbtest-sh.XXXXXX)
chmod 755 "$WORK"
cleanup_hooks=()
on_exit() { local h; for h in "${cleanup_hooks[@]}"; do eval "$h" || true; done; rm -rf "$WORK"; }
trap on_exit EXIT

# fresh_db NAME: an empty database NAME on the test cluster (dropped at exit).
fresh_db() {
  psql -q "$(base_url postgres)" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
  cleanup_hooks+=("psql -q '$(base_url postgres)' -c 'DROP DATABASE IF EXISTS $1 WITH (FORCE)' >/dev/null")
}
fail() { echo "FAIL: $*" >&2; exit 1; }
expect_eq() { [ "$1" == "$2" ] || fail "$3: expected '$2', got '$1'"; }
expect_contains() { grep -qF -- "$2" <<<"$1" || fail "$3: expected to find '$2' in: $1"; }
# expect_exit CODE CMD...: runs CMD, checks its exit status, leaves output in $out.
expect_exit() {
  local want=$1; shift
  set +e; out=$("$@" 2>&1); local got=$?; set -e
  [ "$got" == "$want" ] || fail "'$*' exited $got, expected $want; output: $out"
}
