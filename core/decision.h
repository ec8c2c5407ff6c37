/*
 * decision.h: the audit trail of policies in the management database.
 *
 * Every policy version loaded or refused is recorded in policy_versions (name, sha256,
 * source, time); a refusal also becomes a `policy.reload_failed` event. Every decision
 * that causes an effect is recorded in policy_decisions with its input and output as
 * JSON, linked to the event it caused, in the same transaction as the effect.
 */
#ifndef SB_DECISION_H
#define SB_DECISION_H

#include <stdint.h>

#include "db.h"
#include "error.h"
#include "policy.h"

typedef struct sb_decision {
  char policy[64];
  char fn[64];
  char sha256[65];
  char *input_json;  /* owned */
  char *output_json; /* owned */
  uint64_t duration_ns;
} sb_decision_t;

int sb_decision_record_version(sb_db_t *db, const sb_policy_result_t *r, const char *source,
                               sb_error_t *err);
/* Inserts the decision, linked to the event it caused (may be NULL); its version is on
 * record from when it was loaded (the registry's listener). id_out (37 bytes) may be
 * NULL. */
int sb_decision_record(sb_db_t *db, const sb_decision_t *d, const char *event_id,
                       char *id_out, sb_error_t *err);
void sb_decision_clear(sb_decision_t *d);

#endif
