#!/usr/bin/env bash
# A `solobase serve` outliving its management database, on an embedded cluster of this
# test's own. First only the coordination connection is cut (pg_terminate_backend)
# while a job runs: the engine registers again under a new id, and the job in hand is
# neither requeued nor run twice (its worker's session still holds the old id), and the
# old id is seen stopped once the workers let it go. Then the cluster is stopped under
# the engine (/healthz and the API answer 503, the process stays up) and started again
# (a new engine id again, an instance provisioned under it, the scheduler led again).
# Last, a stop asked for while the database is down ends the process promptly.
source "$(dirname "$0")/../support/testlib.sh"

unset DATABASE_URL
export SOLOBASE_DATA_DIR=$WORK/data
export SOLOBASE_DATABASE_NAME=solobase_saas
# The embedded cluster is stopped at exit even if the test fails before the engine runs
# (start_serve adds the engine before it).
cleanup_hooks=("'$SRC/tests/support/stop-servers' '$WORK/data'" "${cleanup_hooks[@]}")

"$SB" -q db init >/dev/null
"$SB" -q db migrate >/dev/null
"$SB" -q db seed >/dev/null
url=$("$SB" db url)
sql() { psql -At "$url" -c "$1"; }

start_serve

# http METHOD PATH [BODY]: one request (bash's /dev/tcp: no client to install); leaves
# the status in $status and the body in $body.
http() {
  local req="$1 $2 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
  [ -n "${token:-}" ] && req+="Authorization: Bearer $token\r\n"
  [ $# -ge 3 ] && req+="Content-Type: application/json\r\nContent-Length: ${#3}\r\n"
  local resp
  resp=$(exec 3<>"/dev/tcp/127.0.0.1/$port" && printf "$req\r\n%s" "${3:-}" >&3 && timeout 15 cat <&3) ||
    serve_failed "$1 $2: no answer"
  status=$(sed -n '1s|^HTTP/1\.1 \([0-9]*\).*|\1|p' <<<"$resp")
  body=${resp#*$'\r\n\r\n'}
}
# json EXPR: a field of $body (EXPR indexes the decoded document `d`), by lua-cjson.
json() { lua5.4 -e 'local d = require("cjson").decode(io.read("a")); print('"$1"')' <<<"$body"; }
# wait_until SECONDS WHAT CMD...: runs CMD every 0.2 s until it succeeds.
wait_until() {
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" && return 0; sleep 0.2; done
  serve_failed "$what within $secs s"
}
healthz_is() { http GET /healthz; [ "$status" == "$1" ]; }
alive() { kill -0 "$serve_pid" 2>/dev/null || serve_failed "the engine exited"; }
logged() { grep -qF -- "$1" "$serve_log"; }
# provision NAME: creates an instance and waits until it is active; leaves its id in $iid.
provision() {
  http POST /v1/instances "{\"plan\": \"starter\", \"name\": \"$1\", \"subdomain\": \"$1\"}"
  [ "$status" == 202 ] || serve_failed "POST /v1/instances ($1): $status $body"
  iid=$(json d.instance.id)
  is_active() { http GET "/v1/instances/$iid"; [ "$(json d.instance.status)" == active ]; }
  wait_until 60 "instance $1 active" is_active
}
running_engines() { sql "SELECT id || ':' || pid FROM engines WHERE status = 'running' ORDER BY id"; }
engine_status() { sql "SELECT status FROM engines WHERE id = $1"; }
gone() { [ "$(engine_status "$1")" == stopped ]; }

# registered_again OLD: the one running engine after OLD, this process; its id.
registered_again() {
  wait_until 30 "the engine registering again" logged "engine $1 continues as engine"
  # Seen stopped only once every worker has let the id go: they hold it too.
  wait_until 20 "the old engine $1 seen stopped" gone "$1"
  local now
  now=$(running_engines)
  [[ "$now" =~ ^[0-9]+:$serve_pid$ ]] || serve_failed "running engines after engine $1: '$now'"
  [ "${now%%:*}" -gt "$1" ] || serve_failed "engine ${now%%:*} is not new (was $1)"
  echo "${now%%:*}"
}

first=$(running_engines)
expect_eq "$first" "$(sql "SELECT min(id) FROM engines"):$serve_pid" "one engine, this process"
first=${first%%:*}

# --- Only the coordination connection is cut, while a job runs ---
# A fresh fleet: the first capacity check queues a server.create (initdb: a second or two).
job_running() { [ "$(sql "SELECT count(*) FROM jobs WHERE kind = 'server.create' AND status = 'running'")" == 1 ]; }
wait_until 20 "the first server.create running" job_running
expect_eq "$(sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE application_name = 'solobase coordinator'")" 1 "coordinator terminated"
second=$(registered_again "$first")
job_done() { [ "$(sql "SELECT status FROM jobs WHERE kind = 'server.create'")" == succeeded ]; }
wait_until 30 "the server.create done" job_done
expect_eq "$(sql "SELECT attempts || ' ' || locked_by FROM jobs WHERE kind = 'server.create'")" \
  "1 $first" "the job in hand ran once, under the id it was claimed under"
logged "requeued" && serve_failed "a job was requeued"
logged "lost the coordination connection" || serve_failed "no word of the lost connection"
healthz_is 200 || serve_failed "/healthz after the cut: $status $body"
email=outage-$$@example.com
"$SB" -q user create --email "$email" --role operator </dev/null >/dev/null
token=$("$SB" -q token create --user "$email" --scope operator 2>/dev/null)
[[ "$token" == sbt_* ]] || fail "token create printed '$token', not a token"
provision before-outage
expect_eq "$(sql "SELECT locked_by FROM jobs WHERE instance_id = '$iid' AND kind = 'instance.provision'")" \
  "$second" "the job after the cut ran under the new id"

# --- The database stops under the engine ---
"$SB" -q db stop >/dev/null
wait_until 10 "/healthz answering 503" healthz_is 503
expect_eq "$(json d.checks.database)" unreachable "/healthz names the database check"
expect_eq "$(json d.status)" unavailable "/healthz status during the outage"
http POST /v1/instances '{"plan": "starter", "name": "during", "subdomain": "during-outage"}'
expect_eq "$status" 503 "POST /v1/instances during the outage"
expect_eq "$(json d.error.code)" unavailable "error code during the outage"
sleep 2 # the engine used to exit some 20 ms after the connection broke
alive
healthz_is 503 || serve_failed "/healthz 2 s into the outage: $status $body"
expect_eq "$(json d.checks.engine)" registering "/healthz names the engine waiting to register"
logged "engine $second takes no new jobs" || serve_failed "the lost id not named"

# --- Back: a new engine id in the same process, working ---
"$SB" -q db start >/dev/null
wait_until 30 "/healthz answering 200 after the restart" healthz_is 200
third=$(registered_again "$second") # registered: /healthz said ok only after that
expect_eq "$(json d.checks.engine)" ok "/healthz's engine check after the restart"
provision after-outage
expect_eq "$(sql "SELECT locked_by FROM jobs WHERE instance_id = '$iid' AND kind = 'instance.provision'")" \
  "$third" "the new instance's job ran under the new engine id"
wait_until 20 "engine $third leading the scheduler" logged "engine $third leads the scheduler"
expect_eq "$(sql "SELECT count(*) FROM jobs j JOIN engines e ON e.id = j.locked_by
                  WHERE j.status = 'running' AND e.status = 'stopped'")" 0 "no job running under a stopped id"
alive

# --- A stop asked for while the database is down ---
"$SB" -q db stop >/dev/null
wait_until 10 "/healthz answering 503" healthz_is 503
kill -TERM "$serve_pid"
for _ in $(seq 150); do kill -0 "$serve_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$serve_pid" 2>/dev/null && serve_failed "a stop during the outage took over 15 s"
set +e
wait "$serve_pid"
rc=$?
set -e
serve_pid=
expect_eq "$rc" 0 "exit status of a stop during the outage"
echo "ok: the engine outlived its database and came back as a new engine"
