/*
 * decision.c: recording policy versions and decisions (see decision.h).
 */
#include "decision.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

int sb_decision_record_version(sb_db_t *db, const sb_policy_result_t *r, const char *source,
                               sb_error_t *err) {
  const char *status = r->outcome == SB_POLICY_REFUSED ? "refused" : "loaded";
  const char *params[] = {r->name, r->sha256, source ? source : "", status,
                          r->outcome == SB_POLICY_REFUSED ? r->error : NULL};
  if (!r->sha256[0]) return 0; /* an unreadable file has nothing to record */
  if (sb_db_exec_params(db,
                        "INSERT INTO policy_versions (name, sha256, source, status, error) "
                        "VALUES ($1, $2, $3, $4, $5) "
                        "ON CONFLICT (name, sha256) DO UPDATE SET last_loaded_at = now(), "
                        "load_count = policy_versions.load_count + 1, "
                        "status = EXCLUDED.status, error = EXCLUDED.error",
                        5, params, err) != 0)
    return -1;
  if (r->outcome != SB_POLICY_REFUSED) return 0;
  const char *ev[] = {r->name, r->path, r->sha256, r->error};
  return sb_db_exec_params(
      db,
      "INSERT INTO instance_events (event_type, description, payload, actor) VALUES "
      "('policy.reload_failed', 'Policy ' || $1 || ' refused; the previous version keeps serving', "
      "jsonb_build_object('policy', $1::text, 'file', $2::text, 'sha256', $3::text, "
      "'error', $4::text), 'policy-engine')",
      4, ev, err);
}

int sb_decision_record(sb_db_t *db, const sb_decision_t *d, const char *event_id,
                       char *id_out, sb_error_t *err) {
  char us[32];
  snprintf(us, sizeof us, "%llu", (unsigned long long)(d->duration_ns / 1000));
  const char *params[] = {d->policy, d->fn, d->sha256, d->input_json, d->output_json,
                          event_id, us};
  PGresult *res = sb_db_query(db,
                              "INSERT INTO policy_decisions (policy, function, version_sha256, "
                              "input, output, event_id, duration_us) "
                              "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                              7, params, err);
  if (!res) return -1;
  if (id_out) snprintf(id_out, 37, "%s", PQgetvalue(res, 0, 0));
  PQclear(res);
  return 0;
}

void sb_decision_clear(sb_decision_t *d) {
  free(d->input_json);
  free(d->output_json);
  memset(d, 0, sizeof *d);
}
