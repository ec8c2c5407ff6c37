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

# start_serve: `solobase serve` on a port the kernel picks (logged by the engine), in
# the background, its log in $serve_log; sets serve_pid and port, or fails with the
# log's end. At exit the engine is stopped first, then every server under
# $SOLOBASE_DATA_DIR (the embedded cluster and the fleet's), even when a check fails.
serve_pid=
serve_log=$WORK/serve.log
serve_failed() { fail "$1; the engine's log ends with:
$(tail -n 40 "$serve_log")"; }
stop_serve() {
  [ -n "$serve_pid" ] || return 0
  kill -TERM "$serve_pid" 2>/dev/null || return 0
  for _ in $(seq 150); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" 2>/dev/null || true
}
start_serve() {
  cleanup_hooks=("stop_serve" "'$SRC/tests/support/stop-servers' '$SOLOBASE_DATA_DIR'" "${cleanup_hooks[@]}")
  "$SB" serve --listen 127.0.0.1:0 >"$serve_log" 2>&1 &
  serve_pid=$!
  port=
  for _ in $(seq 100); do
    port=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9][0-9]*\) .*|\1|p' "$serve_log" | head -n 1)
    [ -n "$port" ] && break
    kill -0 "$serve_pid" 2>/dev/null || serve_failed "solobase serve exited at start"
    sleep 0.1
  done
  [ -n "$port" ] || serve_failed "solobase serve did not say where it listens within 10 s"
}
