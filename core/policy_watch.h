/*
 * policy_watch.h: hot reload of policies/ while the engine runs.
 *
 * A thread watches the policies directory with inotify. A change to a *.lua file (or a
 * trigger: SIGHUP, an operator's request) leads, after a short quiet period so an
 * editor's save lands whole, to sb_policy_registry_reload(): changed files are
 * validated in isolation and swapped in, broken ones refused with file:line while the
 * previous version keeps serving. Results are logged; the registry's listener records
 * them (versions, `policy.reload_failed` events).
 */
#ifndef SB_POLICY_WATCH_H
#define SB_POLICY_WATCH_H

#include "error.h"
#include "policy.h"

typedef struct sb_policy_watch sb_policy_watch_t;

sb_policy_watch_t *sb_policy_watch_start(sb_policy_registry_t *reg, sb_error_t *err);
/* Asks for a reload now. Async-signal-safe: a SIGHUP handler may call it. */
void sb_policy_watch_trigger(sb_policy_watch_t *w);
/* Number of reloads done so far (for tests and /metrics). */
unsigned long sb_policy_watch_reloads(sb_policy_watch_t *w);
void sb_policy_watch_stop(sb_policy_watch_t *w);

#endif
