#!/usr/bin/env bash
# `solobase repl`: piped input (values, query tables, errors that do not stop the
# session, the exit status), a session on a pseudo-terminal driven through tmux as a
# person types (banner, multi-line chunks, .timing, Tab completion, Ctrl-C, history),
# --dry-run rolled back at exit, and the options.
source "$(dirname "$0")/../support/testlib.sh"

# repl_piped [-OPTIONS] LINES...: feeds LINES to `solobase repl OPTIONS`; leaves the
# output (stdout and stderr) in $out and the exit status in $rc.
repl_piped() {
  local opts=()
  while [[ "${1:-}" == -* ]]; do opts+=("$1"); shift; done
  set +e
  out=$(printf '%s\n' "$@" | "$SB" -q repl "${opts[@]}" 2>&1)
  rc=$?
  set -e
}

# --- Piped ---
expect_eq "$(echo 'return 1 + 1' | "$SB" -q repl)" 2 "piped expression"
expect_eq "$(echo '1 + 1' | "$SB" -q repl)" 2 "piped expression without return"

repl_piped 'return sb.db.query("SELECT code, price_monthly_cents FROM plans ORDER BY sort_order")'
expect_eq "$rc" 0 "query exit status"
expect_eq "$(sed -n 1p <<<"$out")" "     code     | price_monthly_cents" "query header"
expect_eq "$(sed -n 2p <<<"$out")" "--------------+---------------------" "query separator"
expect_eq "$(sed -n 3p <<<"$out")" " hobby        |                   0" "first row, number right-aligned"
expect_contains "$out" " enterprise   |              199900" "last row"
expect_eq "$(tail -n 1 <<<"$out")" "(5 rows)" "row count"

repl_piped 'sb.db.query("SELECT 1 AS one, NULL AS missing, $1::jsonb AS doc", {a = "/x"})'
expect_contains "$out" ' one | missing |    doc' "header with a NULL and a jsonb column"
expect_contains "$out" '   1 |         | {"a":"/x"}' "NULL empty, jsonb as compact JSON"
expect_contains "$out" "(1 row)" "one row"

# A string that C would cut short at a NUL is refused, not taken as another value.
repl_piped 'sb.fleet.provision{user_id = "00000000-0000-4000-8000-000000000000", plan = "hobby", name = "a\0b", subdomain = "nul"}'
expect_contains "$out" "sb.fleet.provision: name holds a NUL byte" "a NUL in a request field"

repl_piped 'x = 40' 'error("boom")' 'x + 2' 'sb.db.query("SELEC 1")' 'return "still here"'
expect_eq "$rc" 1 "exit status after a failed chunk"
expect_contains "$out" "stdin:1: boom" "runtime error with its line"
expect_contains "$out" "stack traceback:" "runtime error with a traceback"
expect_eq "$(grep -x 42 <<<"$out")" 42 "the line after an error still runs"
expect_contains "$out" 'syntax error at or near "SELEC" [42601]' "SQL error"
expect_eq "$(tail -n 1 <<<"$out")" '"still here"' "the session goes on after a SQL error"

repl_piped 'function f(x)' '  return x * 2' 'end' 'f(21)' 'x = ' '  f(1) +' '  f(2)' 'x' '1, nil, "s"' '{3, 2, {a = 1}}'
expect_eq "$rc" 0 "multi-line chunks"
expect_eq "$out" '42
6
1
nil
"s"
{
  3,
  2,
  {
    a = 1
  }
}' "multi-line chunks, several values, nested tables"

repl_piped 'return 1 +' '+ 2'
expect_eq "$rc" 1 "syntax error"
expect_contains "$out" "stdin:2: unexpected symbol near '+'" "syntax error names the line in the chunk"
repl_piped 'return 1' 'function g('
expect_eq "$rc" 1 "a chunk cut off by the end of input fails"
expect_contains "$out" "near <eof>" "the cut-off chunk's error"

repl_piped '.timing' 'return 1' '.bogus' '.quit' 'return "not reached"'
expect_eq "$rc" 1 "an unknown dot command fails"
expect_contains "$out" "Timing is on." ".timing"
expect_contains "$out" "Time: " ".timing prints the time"
expect_contains "$out" "unknown command .bogus" "unknown dot command"
[[ "$out" != *"not reached"* ]] || fail ".quit stops reading: $out"

repl_piped '.help'
grep -qE '^  sb\.db +.*\<query\>' <<<"$out" || fail ".help lists sb.db and its functions: $out"
expect_contains "$out" 'sb.db.query("SELECT name, price_monthly_cents FROM plans")' ".help examples"
repl_piped 'sb.pretty.format({1, 2, 3})' 'local t = {} t.t = t return t'
expect_contains "$out" '"{ 1, 2, 3 }"' "sb.pretty in the REPL"
expect_contains "$out" 't = <cycle>' "a cycle"

# --- On a terminal: tmux gives the REPL a pseudo-terminal and types as a person ---
command -v tmux >/dev/null || fail "tmux is needed for the terminal test"
# One tmux server per session (a killed server may still answer for a moment), each
# with its socket in $WORK: tmux leaves its socket behind when the server ends.
cleanup_hooks+=("tmux -S $WORK/tmux-1 kill-server 2>/dev/null" "tmux -S $WORK/tmux-2 kill-server 2>/dev/null")
sock=$WORK/tmux-1
tm() { tmux -S "$sock" "$@"; }
# type TEXT: types TEXT and Enter.
type_line() { tm send-keys -t repl -l "$1"; tm send-keys -t repl Enter; }
# wait_for TEXT WHAT [GREP-OPTIONS]: polls the screen (with scrollback) until a line is
# TEXT (-xF: exactly, as typed; the screen has no trailing blanks).
wait_for() {
  local i
  for i in $(seq 100); do
    screen=$(tm capture-pane -p -t repl -S -200 2>/dev/null || true)
    grep -q "${3:--xF}" -- "$1" <<<"$screen" && return 0
    sleep 0.1
  done
  fail "$2: no line '$1' on the screen:
$screen"
}
history=$WORK/history
tm -f /dev/null new-session -d -s repl -x 200 -y 50 \
  "env INPUTRC=/dev/null SOLOBASE_HISTORY='$history' '$SB' -q repl; echo REPL-EXIT=\$?; sleep 60"

version=$("$SB" version | cut -d' ' -f2)
wait_for "^solobase $version repl: Lua 5\.4\.[0-9]+ with the sb API; \.help for help$" "banner" -E
type_line '1 + 2'
wait_for "3" "an expression"
type_line 'function f(x)'
wait_for "sb>>" "continuation prompt"
type_line 'return x * 2'
type_line 'end'
type_line 'f(21)'
wait_for "42" "a multi-line function"
type_line '.timing'
wait_for "Timing is on." ".timing"
tm send-keys -t repl -l 'sb.db.q'
tm send-keys -t repl Tab
tm send-keys -t repl -l '("SELECT 1 AS one")'
tm send-keys -t repl Enter
wait_for "(1 row)" "completed query"
wait_for 'sb> sb.db.query("SELECT 1 AS one")' "Tab completed sb.db.query"
wait_for " one" "query header"
expect_contains "$screen" "Time: " ".timing after a query"
type_line 'error("boom")'
wait_for "stdin:1: boom" "an error"
type_line '2 * 50'
wait_for "100" "alive after an error"
tm send-keys -t repl -l 'sb.'
tm send-keys -t repl Tab Tab
wait_for 'sb> sb.' "the prompt after listing"
for name in config db events json log policy pretty version; do
  grep -qE "(^| )$name( |$)" <<<"$screen" || fail "sb.<Tab><Tab> does not list $name: $screen"
done
tm send-keys -t repl C-u
tm send-keys -t repl -l '"half'
wait_for 'sb> "half' "half-typed line"
tm send-keys -t repl C-c
wait_for 'sb> "half^C' "Ctrl-C shows ^C"
type_line '7 * 6 + 1'
wait_for "43" "Ctrl-C cleared the line"
tm send-keys -t repl -l 'function g()'
tm send-keys -t repl Enter
wait_for "sb>>" "a pending chunk"
tm send-keys -t repl C-c
type_line '"fresh"'
wait_for '"fresh"' "Ctrl-C dropped the pending chunk"
type_line 'print("running") for i = 1, 1e12 do end'
wait_for "running" "a long chunk started"
tm send-keys -t repl C-c
wait_for "stdin:1: interrupted" "Ctrl-C interrupts a running chunk"
type_line '"after"'
wait_for '"after"' "alive after an interrupt"
type_line '.quit'
wait_for "REPL-EXIT=0" ".quit exits 0"
for line in '1 + 2' 'f(21)' '.timing' 'sb.db.query("SELECT 1 AS one")' '7 * 6 + 1' '.quit'; do
  grep -qxF -- "$line" "$history" || fail "history lacks '$line': $(cat -A "$history")"
done
grep -qF 'function f(x)' "$history" || fail "history lacks the multi-line chunk"
[[ $(grep -c . "$history") == "$(wc -l <"$history")" ]] || fail "empty lines in history"
if grep -q '"half' "$history"; then fail "the cancelled line is in the history"; fi

# A second session appends, and finds the first one's lines (Ctrl-R searches back).
tm kill-server
sock=$WORK/tmux-2
tm -f /dev/null new-session -d -s repl -x 200 -y 50 \
  "env INPUTRC=/dev/null SOLOBASE_HISTORY='$history' '$SB' -q repl; echo REPL-EXIT=\$?; sleep 60"
wait_for "sb>" "second session"
tm send-keys -t repl C-r
tm send-keys -t repl -l 'timi'
tm send-keys -t repl Enter
wait_for "Timing is on." "Ctrl-R found the first session's .timing"
tm send-keys -t repl Up Enter
wait_for "Timing is off." "Up recalls the line just run"
type_line '.exit'
wait_for "REPL-EXIT=0" ".exit"
expect_eq "$(tail -n 1 "$history")" ".exit" "the second session appended"
tm kill-server

# --- Dry run: a database of its own, as it writes ---
db=sbtest_repl_$$
fresh_db "$db"
url=$(base_url "$db")
DATABASE_URL=$url "$SB" -q db migrate >/dev/null
DATABASE_URL=$url "$SB" -q db seed >/dev/null
insert='sb.db.exec("INSERT INTO users (email) VALUES ('"'dry@example.com'"')")'
count='return sb.db.one("SELECT count(*) AS n FROM users").n'
users() { psql -At "$url" -c "SELECT count(*) FROM users"; }

DATABASE_URL=$url repl_piped --dry-run "$insert" "$count"
expect_eq "$rc" 0 "dry run"
expect_eq "$(tail -n 2 <<<"$out" | head -n 1)" 1 "the insert is visible in the session"
expect_contains "$out" "dry run: the session is one transaction" "dry-run banner"
expect_contains "$out" "dry run: rolled back everything" "dry-run end"
expect_eq "$(users)" 0 "nothing left after a dry run"

# A failed statement does not abort the rest of a dry run (each chunk is a savepoint).
DATABASE_URL=$url repl_piped -n 'sb.db.exec("INSERT INTO nope VALUES (1)")' "$insert" \
  'sb.db.exec("SELECT no_such_function()")' "$count"
expect_eq "$rc" 1 "dry run with failures"
expect_eq "$(tail -n 2 <<<"$out" | head -n 1)" 1 "work around failed statements kept"
expect_eq "$(users)" 0 "nothing left after a failed dry run"

DATABASE_URL=$url repl_piped "$insert" "$count"
expect_eq "$(tail -n 1 <<<"$out")" 1 "without --dry-run"
expect_eq "$(users)" 1 "the insert persists without --dry-run"

# --- Options ---
expect_exit 0 "$SB" repl --help
expect_contains "$out" "usage: solobase repl [--dry-run]" "--help"
expect_exit 2 "$SB" repl --bogus
expect_contains "$out" "solobase repl --help" "bad option"
expect_exit 2 "$SB" repl extra
