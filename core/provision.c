/*
 * provision.c: the instance and server state machines (see provision.h).
 *
 * Layout: helpers (ids, UTF-8 text, secrets, events, policy calls); placement; the
 * request transaction; lifecycle requests; job handlers (instance.provision,
 * instance.suspend, instance.resume, instance.deprovision, server.create,
 * fleet.health_checks, server.health_check, fleet.capacity_check); restart of local
 * servers.
 */
#include "provision.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "log.h"
#include "luaconv.h"
#include "util.h"

/* Instances in these states hold a place on their shared server. */
#define HOLDS_CAPACITY "('provisioning', 'active', 'suspended', 'deleting')"
/* How often a request retries placement after losing a race for the last place. */
#define PLACEMENT_TRIES 5

void sb_uuid_v4(char *out) {
  unsigned char b[16];
  sb_random_bytes(b, sizeof b, NULL);
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
  snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
           b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
           b[14], b[15]);
}

static void fail_code(sb_error_t *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail_code(sb_error_t *err, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sb_error_vset(err, fmt, ap);
  va_end(ap);
  snprintf(err->sqlstate, sizeof err->sqlstate, "%s", code);
}

/* ---- secrets ---------------------------------------------------------------------- */

/* Encrypts plain for column context; *param is a bytea parameter (caller frees). */
static int seal(sb_fleet_ctx_t *ctx, const char *context, const char *plain, char **param,
                char *key_id, sb_error_t *err) {
  unsigned char *blob;
  size_t len;
  if (sb_secret_encrypt(ctx->keys, context, plain, strlen(plain), &blob, &len, key_id, err) != 0)
    return -1;
  *param = sb_secret_bytea_param(blob, len);
  free(blob);
  return 0;
}

/* Decrypts a bytea value as PostgreSQL prints it ("\x..."); caller frees *plain. */
static int unseal(sb_fleet_ctx_t *ctx, const char *context, const char *key_id,
                  const char *bytea_text, char **plain, sb_error_t *err) {
  size_t len = 0;
  unsigned char *blob = PQunescapeBytea((const unsigned char *)bytea_text, &len);
  if (!blob) {
    sb_error_set(err, "cannot read the stored secret");
    return -1;
  }
  int rc = sb_secret_decrypt(ctx->keys, context, key_id, blob, len, plain, NULL, err);
  PQfreemem(blob);
  return rc;
}

/* ---- events and decisions ------------------------------------------------------------ */

static int emit(sb_fleet_ctx_t *ctx, const char *type, const char *instance_id,
                const char *server_id, const char *description, const char *payload,
                char *event_id, sb_error_t *err) {
  const char *p[] = {type, instance_id, server_id, description, payload ? payload : "{}",
                     ctx->actor ? ctx->actor : "engine"};
  PGresult *res = sb_db_query(
      ctx->db,
      "INSERT INTO instance_events (event_type, instance_id, user_id, shared_rds_id, "
      "description, payload, actor) VALUES ($1, $2::uuid, "
      "(SELECT user_id FROM instances WHERE id = $2::uuid), $3, $4, $5, $6) RETURNING id",
      6, p, err);
  if (!res) return -1;
  if (event_id) snprintf(event_id, 37, "%s", PQgetvalue(res, 0, 0));
  PQclear(res);
  return 0;
}

static int record(sb_fleet_ctx_t *ctx, sb_decision_t *d, const char *event_id,
                  sb_error_t *err) {
  if (!d->input_json) return 0; /* no decision was taken */
  return sb_decision_record(ctx->db, d, event_id, NULL, err);
}

/* Calls policy.fn on input_json; on success the answer is on top of the policy
 * engine's stack (until end_decision) and d holds the decision for the record. */
static lua_State *decide(sb_fleet_ctx_t *ctx, const char *policy, const char *fn,
                         const char *input_json, sb_decision_t *d, sb_error_t *err) {
  sb_decision_clear(d);
  sb_policy_call_t call = {.policy = policy, .fn = fn};
  lua_State *L = sb_policy_begin(ctx->policies, &call, err);
  if (!L) return NULL;
  if (sb_lua_json_decode(L, input_json, strlen(input_json), err) != 0 ||
      sb_policy_invoke(ctx->policies, &call, err) != 0) {
    sb_policy_end(ctx->policies);
    return NULL;
  }
  d->output_json = sb_lua_json_encode(L, -1, NULL, err);
  if (!d->output_json) {
    sb_policy_end(ctx->policies);
    return NULL;
  }
  snprintf(d->policy, sizeof d->policy, "%s", policy);
  snprintf(d->fn, sizeof d->fn, "%s", fn);
  snprintf(d->sha256, sizeof d->sha256, "%s", call.sha256);
  d->input_json = sb_xstrdup(input_json);
  d->duration_ns = call.duration_ns;
  return L;
}

static void end_decision(sb_fleet_ctx_t *ctx) { sb_policy_end(ctx->policies); }

/* Field readers for answers (contracts guarantee the types). */
static const char *answer_string(lua_State *L, const char *k, char *out, size_t len) {
  lua_getfield(L, -1, k);
  const char *s = lua_tostring(L, -1);
  snprintf(out, len, "%s", s ? s : "");
  lua_pop(L, 1);
  return s ? out : NULL;
}

static long long answer_integer(lua_State *L, const char *k) {
  lua_getfield(L, -1, k);
  long long v = (long long)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

static bool answer_bool(lua_State *L, const char *k) {
  lua_getfield(L, -1, k);
  bool v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

/* ---- placement ------------------------------------------------------------------------ */

/* The shared servers and whether one is being made, as placement's input pieces. */
static const char servers_sql[] =
    "SELECT coalesce(json_agg(json_build_object('id', id, 'status', status,"
    "  'current_databases', current_databases, 'max_databases', max_databases,"
    "  'storage_used_gb', storage_used_gb, 'storage_total_gb', storage_total_gb)"
    "  ORDER BY current_databases, id) FILTER (WHERE status IN ('active', 'degraded', 'draining')),"
    "  '[]'::json),"
    " coalesce(bool_or(status = 'provisioning'), false) OR EXISTS (SELECT 1 FROM jobs"
    "  WHERE dedupe_key = 'server.create:shared' AND status IN ('queued', 'running'))"
    " FROM shared_rds_instances WHERE driver = $1";

/* Asks the placement policy where a database of quota_gb goes, given the servers JSON;
 * chosen is "" for none, new_server the JSON of a server to open (or ""). */
static int ask_placement(sb_fleet_ctx_t *ctx, long long quota_gb, const char *key,
                         const char *servers, bool opening, char *chosen, char *new_server,
                         size_t ns_len, sb_decision_t *d, sb_error_t *err) {
  /* Pieces from the database (JSON it made), an integer and a uuid we made: safe to
   * splice. The key spreads concurrent requests over the least-loaded servers. */
  char keyfield[64] = "";
  if (key) snprintf(keyfield, sizeof keyfield, ", \"key\": \"%.36s\"", key);
  char *input = sb_xasprintf("{\"request\": {\"storage_quota_gb\": %lld%s}, "
                             "\"servers\": %s, \"opening\": %s}",
                             quota_gb, keyfield, servers, opening ? "true" : "false");
  lua_State *L = decide(ctx, "placement", "place", input, d, err);
  free(input);
  if (!L) return -1;
  answer_string(L, "server_id", chosen, 37);
  new_server[0] = '\0';
  if (answer_bool(L, "open_new_server")) {
    lua_getfield(L, -1, "new_server");
    char *json = sb_lua_json_encode(L, -1, NULL, NULL);
    snprintf(new_server, ns_len, "%s", json ? json : "{}");
    free(json);
    lua_pop(L, 1);
  }
  end_decision(ctx);
  return 0;
}

/* Queues the creation of a new shared server (at most one at a time). Called only
 * outside a transaction that holds a server's row: the dedupe key makes concurrent
 * callers wait for each other, and one of them holding a server another wants would
 * deadlock. */
static int request_server(sb_fleet_ctx_t *ctx, const char *new_server, sb_error_t *err) {
  sb_job_enqueue_t j = {.kind = "server.create", .payload = new_server,
                        .dedupe_key = "server.create:shared", .max_attempts = 10};
  return sb_jobs_enqueue(ctx->db, &j, NULL, NULL, err);
}

/* Inside the caller's transaction: asks the placement policy for a shared server and
 * takes a place on it (key: the instance, or NULL). server_id is "" when none had room.
 * new_server (256 bytes) gets the JSON of a server to open, or "": the caller queues it
 * with request_server() after its transaction ends. */
static int place_shared(sb_fleet_ctx_t *ctx, long long storage_quota_gb, const char *key,
                        char *server_id, char *new_server_out, sb_decision_t *d,
                        sb_error_t *err) {
  server_id[0] = '\0';
  new_server_out[0] = '\0';
  for (int attempt = 0; attempt < PLACEMENT_TRIES; attempt++) {
    const char *sp[] = {sb_config()->fleet_driver};
    PGresult *res = sb_db_query(ctx->db, servers_sql, 1, sp, err);
    if (!res) return -1;
    char *servers = sb_xstrdup(PQgetvalue(res, 0, 0));
    bool in_flight = PQgetvalue(res, 0, 1)[0] == 't';
    PQclear(res);
    char chosen[37] = "", new_server[256] = "";
    int rc = ask_placement(ctx, storage_quota_gb, key, servers, in_flight, chosen, new_server,
                           sizeof new_server, d, err);
    free(servers);
    if (rc != 0) return -1;
    if (new_server[0]) snprintf(new_server_out, 256, "%s", new_server);
    if (!chosen[0]) return 0;
    /* The place is taken only if it is still free: concurrent requests can never
     * fill a server past max_databases, whatever they decided. */
    const char *cp[] = {chosen};
    res = sb_db_query(ctx->db,
                      "UPDATE shared_rds_instances SET current_databases = current_databases + 1 "
                      "WHERE id = $1 AND status = 'active' AND current_databases < max_databases "
                      "RETURNING id",
                      1, cp, err);
    if (!res) return -1;
    bool got = PQntuples(res) == 1;
    PQclear(res);
    if (got) {
      snprintf(server_id, 37, "%s", chosen);
      return 0;
    }
    sb_debug("provision", "lost the race for the last place on %s; placing again", chosen);
  }
  return 0;
}

static int release_capacity(sb_fleet_ctx_t *ctx, const char *server_id, sb_error_t *err) {
  if (!server_id || !server_id[0]) return 0;
  const char *p[] = {server_id};
  return sb_db_exec_params(ctx->db,
                           "UPDATE shared_rds_instances SET current_databases = current_databases - 1 "
                           "WHERE id = $1",
                           1, p, err);
}

/* ---- the request ------------------------------------------------------------------------ */

/* A subdomain or a region: 1 to 63 of a-z, 0-9 and '-', not starting or ending with
 * '-' (a DNS label; the schema checks subdomains again). */
static bool valid_label(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 63 || s[0] == '-' || s[n - 1] == '-') return false;
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-')) return false;
  return true;
}

/* Checks what a caller may pass (provision.h) before anything is read or written:
 * false with err (SB_ERR_INVALID) and *field naming the member at fault. */
static bool valid_request(const sb_provision_request_t *req, const char **field, sb_error_t *err) {
  *field = !req->user_id ? "user_id" : !req->plan ? "plan" : !req->name ? "name"
           : !req->subdomain ? "subdomain" : NULL;
  if (*field) {
    fail_code(err, SB_ERR_INVALID, "a request needs user_id, plan, name and subdomain");
    return false;
  }
  long name_chars = sb_utf8_length(req->name, strlen(req->name));
  if (sb_utf8_length(req->plan, strlen(req->plan)) < 1) {
    *field = "plan";
    fail_code(err, SB_ERR_INVALID, "plan must be a plan's code");
  } else if (name_chars < 1 || name_chars > 100) {
    *field = "name";
    fail_code(err, SB_ERR_INVALID, "name must be 1 to 100 characters of UTF-8 text");
  } else if (!valid_label(req->subdomain)) {
    *field = "subdomain";
    fail_code(err, SB_ERR_INVALID,
              "subdomain must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'");
  } else if (req->region && !valid_label(req->region)) {
    *field = "region";
    fail_code(err, SB_ERR_INVALID,
              "region must be 1 to 63 of a-z, 0-9 and '-', not starting or ending with '-'");
  }
  return *field == NULL;
}

/* The writes of a request, one statement: take a place on the chosen shared server
 * ($7; NULL: none chosen) if it is still active and has room, and only then make the
 * dedicated server row ($17; NULL: shared tier), the instance, the spec's step-4
 * `created` event, the decision records and the provisioning job. If the place is
 * gone, the sb_raise() in the last column fails the statement and nothing is written
 * (the request places again). A new shared server, when placement asks for one, is
 * requested after the request's transaction (see request_server()).
 *
 * The claim comes first: the instance row's reference to the server is then checked
 * under this transaction's own update lock, with no key-share lock for concurrent
 * requests to pile into multixacts on that hot row. Only the instance refers to the
 * server, for the same reason. */
static const char request_sql[] =
    "WITH claim AS ("
    "  UPDATE shared_rds_instances SET current_databases = current_databases + 1"
    "  WHERE $7::uuid IS NOT NULL AND id = $7::uuid AND status = 'active'"
    "    AND current_databases < max_databases RETURNING id),"
    " go AS (SELECT (SELECT id FROM claim) AS server"
    "  WHERE $7::uuid IS NULL OR EXISTS (SELECT 1 FROM claim)),"
    " ded AS ("
    "  INSERT INTO dedicated_rds_instances (id, rds_instance_id, driver, instance_class,"
    "    admin_user, admin_password_enc, secret_key_id, host)"
    "  SELECT $17::uuid, $18, $19, $20, 'solobase_admin', $21, $22, '127.0.0.1' FROM go"
    "  WHERE $17::uuid IS NOT NULL RETURNING id),"
    " inst AS ("
    "  INSERT INTO instances (id, user_id, plan_id, name, subdomain, status, database_tier,"
    "    compute_tier, shared_rds_id, dedicated_rds_id, database_name, database_user,"
    "    database_password_enc, secret_key_id, storage_quota_gb, api_requests_quota_daily,"
    "    region)"
    "  SELECT $1::uuid, $2::uuid, $3::uuid, $4, $5, CASE WHEN $17::uuid IS NULL AND"
    "    go.server IS NULL THEN 'requested' ELSE 'provisioning' END, $6, $8, go.server,"
    "    (SELECT id FROM ded), $9, $10, $11, $12, $13, $14, $15 FROM go"
    "  RETURNING id, user_id, status),"
    " ev AS ("
    "  INSERT INTO instance_events (event_type, instance_id, user_id, description, payload,"
    "    actor)"
    "  SELECT 'created', inst.id, inst.user_id, 'Instance provisioning started',"
    "    jsonb_build_object('plan', $23::text, 'database_tier', $6::text, 'status',"
    "      inst.status, 'shared_rds_id', $7::uuid), $16 FROM inst RETURNING id),"
    " dec AS ("
    "  INSERT INTO policy_decisions (policy, function, version_sha256, input, output,"
    "    event_id, duration_us)"
    "  SELECT d.policy, d.fn, d.sha, d.input::jsonb, d.output::jsonb, ev.id, d.us::int"
    "  FROM ev, (VALUES ($24, $25, $26, $27, $28, $29),"
    "    ($30, $31, $32, $33, $34, $35)) d(policy, fn, sha, input, output, us)"
    "  WHERE d.policy IS NOT NULL),"
    " job AS ("
    "  INSERT INTO jobs (kind, instance_id, dedupe_key)"
    "  SELECT 'instance.provision', inst.id, 'provision:' || inst.id FROM inst RETURNING id)"
    " SELECT (SELECT id FROM ev), (SELECT id FROM job), (SELECT status FROM inst),"
    "  CASE WHEN EXISTS (SELECT 1 FROM go) THEN 0"
    "  ELSE sb_raise('SB409', 'the chosen server has no room left') END";

/* Everything both policies of a request need, in one query: the plan, whether the
 * user may have instances, how many the user has on the plan, the shared servers and
 * whether a new one is being made; and whether the fleet has the region ($6): `local`,
 * where the engine makes its servers, or that of a shared server not retired. Read
 * under the user's row lock (lock_user_sql), so the count includes every request of
 * the user's that committed before. */
static const char inputs_sql[] =
    "SELECT p.id, (SELECT status FROM users WHERE id = $2::uuid), "
    "json_build_object('plan', json_build_object('code', p.code, 'name', p.name, "
    "  'database_tier', p.database_tier, 'compute_tier', p.compute_tier, "
    "  'storage_quota_gb', p.storage_quota_gb, "
    "  'api_requests_quota_daily', p.api_requests_quota_daily, 'max_instances', p.max_instances), "
    "'request', json_build_object('name', $3::text, 'subdomain', $4::text), "
    "'user', json_build_object('instance_count', (SELECT count(*) FROM instances "
    "  WHERE user_id = $2::uuid AND plan_id = p.id AND status NOT IN ('failed', 'deleted')))), "
    "s.servers, s.opening, s.region_known "
    "FROM plans p, (SELECT coalesce(json_agg(json_build_object('id', id, 'status', status, "
    "  'current_databases', current_databases, 'max_databases', max_databases, "
    "  'storage_used_gb', storage_used_gb, 'storage_total_gb', storage_total_gb) "
    "  ORDER BY current_databases, id) FILTER (WHERE status IN ('active', 'degraded', 'draining')), "
    "  '[]'::json) AS servers, "
    "  coalesce(bool_or(status = 'provisioning'), false) OR EXISTS (SELECT 1 FROM jobs "
    "  WHERE dedupe_key = 'server.create:shared' AND status IN ('queued', 'running')) AS opening, "
    "  $6::text = 'local' OR coalesce(bool_or(region = $6::text AND status <> 'retired'), false) "
    "  AS region_known "
    "  FROM shared_rds_instances WHERE driver = $5) s "
    "WHERE p.code = $1 AND p.is_active";

/* Serialises the requests of one user (FOR NO KEY UPDATE: it does not hold back the
 * key-share locks of inserts that refer to the user). */
static const char lock_user_sql[] = "SELECT 1 FROM users WHERE id = $1::uuid FOR NO KEY UPDATE";

int sb_provision_request(sb_fleet_ctx_t *ctx, const sb_provision_request_t *req,
                         sb_provision_result_t *out, sb_error_t *err) {
  memset(out, 0, sizeof *out);
  if (!valid_request(req, &out->field, err)) return -1;
  const char *region = req->region ? req->region : "local";
  sb_decision_t tier = {0}, place = {0};
  char *password_param = NULL, *admin_param = NULL, *servers = NULL, new_server[256] = "";
  int rc = -1;
  if (sb_db_begin(ctx->db, err) != 0) return -1;

  /* One request of the user's at a time, from the lock to the commit; then every
   * input of both policies in one query, whose snapshot, taken once the lock is held,
   * counts every request of the user's that went before. One round trip. */
  const char *up[] = {req->user_id};
  const char *gp[] = {req->plan, req->user_id, req->name, req->subdomain,
                      sb_config()->fleet_driver, region};
  sb_db_stmt_t in[] = {{lock_user_sql, 1, up, true, NULL}, {inputs_sql, 6, gp, true, NULL}};
  if (sb_db_pipeline(ctx->db, in, 2, err) != 0) {
    if (strcmp(err->sqlstate, "22P02") == 0) {
      out->field = "user_id";
      fail_code(err, SB_ERR_INVALID, "user_id is not a uuid");
    }
    goto done;
  }
  PQclear(in[0].result);
  PGresult *res = in[1].result;
  if (PQntuples(res) == 0) {
    PQclear(res);
    out->field = "plan";
    fail_code(err, SB_ERR_NOT_FOUND, "unknown plan '%.64s'", req->plan);
    goto done;
  }
  if (PQgetisnull(res, 0, 1) || strcmp(PQgetvalue(res, 0, 1), "active") != 0) {
    if (PQgetisnull(res, 0, 1)) out->field = "user_id";
    fail_code(err, PQgetisnull(res, 0, 1) ? SB_ERR_NOT_FOUND : SB_ERR_REFUSED,
              PQgetisnull(res, 0, 1) ? "no user %s" : "user %s is not active", req->user_id);
    PQclear(res);
    goto done;
  }
  if (PQgetvalue(res, 0, 5)[0] != 't') {
    PQclear(res);
    out->field = "region";
    fail_code(err, SB_ERR_INVALID, "the fleet has no servers in region '%s'", region);
    goto done;
  }
  char plan_id[37];
  snprintf(plan_id, sizeof plan_id, "%s", PQgetvalue(res, 0, 0));
  char *input = sb_xstrdup(PQgetvalue(res, 0, 2));
  servers = sb_xstrdup(PQgetvalue(res, 0, 3));
  bool opening = PQgetvalue(res, 0, 4)[0] == 't';
  PQclear(res);

  lua_State *L = decide(ctx, "provisioning", "decide", input, &tier, err);
  free(input);
  if (!L) goto done;
  char db_tier[16] = "", compute[16] = "", size[64] = "", reason[256] = "";
  bool allowed = answer_bool(L, "allowed");
  answer_string(L, "reason", reason, sizeof reason);
  answer_string(L, "database_tier", db_tier, sizeof db_tier);
  answer_string(L, "compute_tier", compute, sizeof compute);
  answer_string(L, "size", size, sizeof size);
  long long storage_quota = answer_integer(L, "storage_quota_gb");
  long long api_quota = answer_integer(L, "api_requests_quota_daily");
  end_decision(ctx);
  if (!allowed) {
    fail_code(err, SB_ERR_REFUSED, "%s", reason);
    goto done;
  }

  char id[37], hex[13], dbname[32], role[32], password[33], key_id[SB_KEY_ID_LEN + 1];
  sb_uuid_v4(id);
  snprintf(hex, sizeof hex, "%.8s%.4s", id, id + 9);
  snprintf(dbname, sizeof dbname, "instance_%s", hex);
  snprintf(role, sizeof role, "user_%s", hex);
  if (sb_random_token(password, 32, err) != 0) goto done;
  char context[96];
  snprintf(context, sizeof context, "instances.database_password_enc:%s", id);
  int sealed = seal(ctx, context, password, &password_param, key_id, err);
  explicit_bzero(password, sizeof password);
  if (sealed != 0) goto done;

  bool shared = strcmp(db_tier, "shared") == 0;
  char dedicated[37] = "", server_name[32] = "", admin_key[SB_KEY_ID_LEN + 1] = "";
  if (!shared) {
    /* A dedicated server of its own, made by the provisioning job; its admin password
     * is sealed before the server exists, so a crash can never lose it. */
    char admin_pw[33], actx[96];
    sb_uuid_v4(dedicated);
    snprintf(server_name, sizeof server_name, "ded-%s", hex);
    snprintf(actx, sizeof actx, "dedicated_rds_instances.admin_password_enc:%s", dedicated);
    if (sb_random_token(admin_pw, 32, err) != 0) goto done;
    int s2 = seal(ctx, actx, admin_pw, &admin_param, admin_key, err);
    explicit_bzero(admin_pw, sizeof admin_pw);
    if (s2 != 0) goto done;
  }

  char sq[32], aq[32], us1[32], us2[32], actor[96];
  snprintf(sq, sizeof sq, "%lld", storage_quota);
  snprintf(aq, sizeof aq, "%lld", api_quota);
  snprintf(actor, sizeof actor, "%s", ctx->actor ? ctx->actor : "engine");
  for (int attempt = 0; attempt < PLACEMENT_TRIES; attempt++) {
    char chosen[37] = "";
    new_server[0] = '\0';
    if (shared) {
      if (attempt > 0) { /* lost the race for the last place: look again */
        const char *sp[] = {sb_config()->fleet_driver};
        res = sb_db_query_prepared(ctx->db, servers_sql, 1, sp, err);
        if (!res) goto done;
        free(servers);
        servers = sb_xstrdup(PQgetvalue(res, 0, 0));
        opening = PQgetvalue(res, 0, 1)[0] == 't';
        PQclear(res);
      }
      if (ask_placement(ctx, storage_quota, id, servers, opening, chosen, new_server,
                        sizeof new_server, &place, err) != 0)
        goto done;
    }
    snprintf(us1, sizeof us1, "%llu", (unsigned long long)(tier.duration_ns / 1000));
    snprintf(us2, sizeof us2, "%llu", (unsigned long long)(place.duration_ns / 1000));
    const char *p[] = {
        id, req->user_id, plan_id, req->name, req->subdomain, db_tier,
        chosen[0] ? chosen : NULL, compute, dbname, role, password_param, key_id, sq, aq,
        region, actor, shared ? NULL : dedicated, shared ? NULL : server_name, sb_config()->fleet_driver, size,
        admin_param, shared ? NULL : admin_key, req->plan,
        tier.policy, tier.fn, tier.sha256, tier.input_json, tier.output_json, us1,
        place.input_json ? place.policy : NULL, place.fn, place.sha256, place.input_json,
        place.output_json, us2};
    /* A pipeline of one, under a savepoint in the same round trip: a lost race
     * (SB409) undoes only this attempt. */
    sb_db_stmt_t st = {request_sql, 35, p, true, NULL};
    if (sb_db_pipeline(ctx->db, &st, 1, err) == 0) {
      res = st.result;
      snprintf(out->event_id, sizeof out->event_id, "%s", PQgetvalue(res, 0, 0));
      snprintf(out->job_id, sizeof out->job_id, "%s", PQgetvalue(res, 0, 1));
      snprintf(out->status, sizeof out->status, "%s", PQgetvalue(res, 0, 2));
      snprintf(out->instance_id, sizeof out->instance_id, "%s", id);
      snprintf(out->shared_rds_id, sizeof out->shared_rds_id, "%s", chosen);
      out->opening_server = new_server[0] != '\0';
      PQclear(res);
      rc = 0;
      goto done;
    }
    if (strcmp(err->sqlstate, "23505") == 0 && strstr(err->msg, "subdomain")) {
      fail_code(err, SB_ERR_CONFLICT, "subdomain '%s' is taken", req->subdomain);
      goto done;
    }
    if (strcmp(err->sqlstate, "SB409") != 0) goto done;
    sb_debug("provision", "lost the race for the last place on %s; placing again", chosen);
  }
  fail_code(err, SB_ERR_CONFLICT, "shared servers filled up while placing; try again");
done:
  if (rc == 0) rc = sb_db_commit(ctx->db, err);
  else sb_db_rollback(ctx->db, NULL);
  if (rc == 0 && new_server[0] && request_server(ctx, new_server, err) != 0)
    sb_warn("provision", "requesting a new shared server: %s (the capacity check will "
                         "ask again)", err->msg);
  sb_decision_clear(&tier);
  sb_decision_clear(&place);
  free(password_param);
  free(admin_param);
  free(servers);
  return rc;
}

/* ---- lifecycle requests ---------------------------------------------------------------- */

/* Moves instance_id from one of `from` to `to` (NULL: stay) and queues a job of kind,
 * with an event, in one transaction. The job's shared_rds_id is the server the instance
 * holds a place on now (none for requested and failed ones, which hold none): the place
 * the deprovisioning job gives back, so it is given back once whatever the path. */
static int queue_lifecycle(sb_fleet_ctx_t *ctx, const char *instance_id, const char *from,
                           const char *to, const char *kind, const char *event,
                           const char *description, const char *payload, char *job_id,
                           sb_error_t *err) {
  if (sb_db_begin(ctx->db, err) != 0) return -1;
  const char *p[] = {instance_id};
  PGresult *res = sb_db_query(ctx->db,
                              "SELECT status, CASE WHEN status IN " HOLDS_CAPACITY " THEN "
                              "shared_rds_id::text END FROM instances WHERE id = $1 FOR UPDATE",
                              1, p, err);
  if (!res) {
    if (strcmp(err->sqlstate, "22P02") == 0) fail_code(err, SB_ERR_NOT_FOUND, "no instance %.40s", instance_id);
    goto fail;
  }
  if (PQntuples(res) == 0) {
    PQclear(res);
    fail_code(err, SB_ERR_NOT_FOUND, "no instance %.40s", instance_id);
    goto fail;
  }
  char status[16], place[37];
  snprintf(status, sizeof status, "%s", PQgetvalue(res, 0, 0));
  snprintf(place, sizeof place, "%s", PQgetvalue(res, 0, 1));
  PQclear(res);
  char needle[20];
  snprintf(needle, sizeof needle, "'%s'", status);
  if (!strstr(from, needle)) {
    fail_code(err, SB_ERR_CONFLICT, "instance %s is %s; this needs it to be one of %s",
              instance_id, status, from);
    goto fail;
  }
  if (to) {
    const char *up[] = {instance_id, to};
    if (sb_db_exec_params(ctx->db, "UPDATE instances SET status = $2 WHERE id = $1", 2, up, err) != 0)
      goto fail;
  }
  if (emit(ctx, event, instance_id, NULL, description, payload, NULL, err) != 0) goto fail;
  char dedupe[64];
  snprintf(dedupe, sizeof dedupe, "lifecycle:%s", instance_id);
  sb_job_enqueue_t j = {.kind = kind, .instance_id = instance_id, .dedupe_key = dedupe,
                        .payload = payload, .shared_rds_id = place[0] ? place : NULL};
  bool created;
  if (sb_jobs_enqueue(ctx->db, &j, job_id, &created, err) != 0) goto fail;
  if (!created) {
    fail_code(err, SB_ERR_CONFLICT, "instance %s has a lifecycle change in progress (job %s)",
              instance_id, job_id);
    goto fail;
  }
  return sb_db_commit(ctx->db, err);
fail:
  sb_db_rollback(ctx->db, NULL);
  return -1;
}

int sb_instance_suspend(sb_fleet_ctx_t *ctx, const char *instance_id, const char *reason,
                        char *job_id, sb_error_t *err) {
  size_t n = reason ? strlen(reason) : 0;
  if (reason && (n == 0 || n > 63 || strspn(reason, "abcdefghijklmnopqrstuvwxyz_") != n)) {
    fail_code(err, SB_ERR_INVALID,
              "reason must be 1 to 63 lowercase letters and underscores (e.g. payment_overdue)");
    return -1;
  }
  char payload[256];
  snprintf(payload, sizeof payload, "{\"reason\": \"%s\"}", reason ? reason : "operator");
  return queue_lifecycle(ctx, instance_id, "'active'", NULL, "instance.suspend", "suspending",
                         "Suspension requested", payload, job_id, err);
}

int sb_instance_resume(sb_fleet_ctx_t *ctx, const char *instance_id, char *job_id,
                       sb_error_t *err) {
  return queue_lifecycle(ctx, instance_id, "'suspended'", NULL, "instance.resume", "resuming",
                         "Resumption requested", NULL, job_id, err);
}

int sb_instance_deprovision(sb_fleet_ctx_t *ctx, const char *instance_id, char *job_id,
                            sb_error_t *err) {
  return queue_lifecycle(ctx, instance_id,
                         "'requested' 'provisioning' 'active' 'suspended' 'failed'", "deleting",
                         "instance.deprovision", "deleting", "Deletion requested", NULL, job_id,
                         err);
}

/* ---- servers ------------------------------------------------------------------------------ */

typedef enum { TIER_SHARED, TIER_DEDICATED } tier_t;

static const char *server_table(tier_t t) {
  return t == TIER_SHARED ? "shared_rds_instances" : "dedicated_rds_instances";
}

/* Loads a server row and decrypts its admin password into srv. *status (16) may be
 * NULL. */
static int load_server(sb_fleet_ctx_t *ctx, tier_t tier, const char *id, sb_server_t *srv,
                       char *status, sb_error_t *err) {
  memset(srv, 0, sizeof *srv);
  char *sql = sb_xasprintf("SELECT rds_instance_id, coalesce(host, '127.0.0.1'), coalesce(port, 0), "
                           "%s, admin_user, admin_password_enc, secret_key_id, status FROM %s "
                           "WHERE id = $1",
                           tier == TIER_SHARED ? "coalesce(pooler_port, 0)" : "0",
                           server_table(tier));
  const char *p[] = {id};
  PGresult *res = sb_db_query(ctx->db, sql, 1, p, err);
  free(sql);
  if (!res) return -1;
  if (PQntuples(res) == 0) {
    PQclear(res);
    fail_code(err, SB_ERR_NOT_FOUND, "no server %s", id);
    return -1;
  }
  snprintf(srv->name, sizeof srv->name, "%s", PQgetvalue(res, 0, 0));
  snprintf(srv->host, sizeof srv->host, "%s", PQgetvalue(res, 0, 1));
  srv->port = atoi(PQgetvalue(res, 0, 2));
  srv->pooler_port = atoi(PQgetvalue(res, 0, 3));
  srv->pooler = tier == TIER_SHARED;
  snprintf(srv->admin_user, sizeof srv->admin_user, "%s", PQgetvalue(res, 0, 4));
  if (status) snprintf(status, 16, "%s", PQgetvalue(res, 0, 7));
  char context[96], *pw = NULL;
  snprintf(context, sizeof context, "%s.admin_password_enc:%s", server_table(tier), id);
  int rc = unseal(ctx, context, PQgetvalue(res, 0, 6), PQgetvalue(res, 0, 5), &pw, err);
  PQclear(res);
  if (rc != 0) return -1;
  snprintf(srv->admin_password, sizeof srv->admin_password, "%s", pw);
  explicit_bzero(pw, strlen(pw));
  free(pw);
  return 0;
}

static void forget_server(sb_server_t *srv) {
  explicit_bzero(srv->admin_password, sizeof srv->admin_password);
}

static int save_endpoint(sb_fleet_ctx_t *ctx, tier_t tier, const char *id, const sb_server_t *srv,
                         sb_error_t *err) {
  char port[16], pooler[16];
  snprintf(port, sizeof port, "%d", srv->port);
  snprintf(pooler, sizeof pooler, "%d", srv->pooler_port);
  const char *p[] = {id, srv->host, port, srv->pooler_port ? pooler : NULL};
  char *sql = sb_xasprintf("UPDATE %s SET host = $2, port = $3%s WHERE id = $1", server_table(tier),
                           tier == TIER_SHARED ? ", pooler_port = $4" : "");
  int rc = sb_db_exec_params(ctx->db, sql, tier == TIER_SHARED ? 4 : 3, p, err);
  free(sql);
  return rc;
}

/* ---- job: instance.provision -------------------------------------------------------------- */

typedef struct instance_row {
  char status[16], tier[16], shared[37], dedicated[37], dbname[64], role[64], user_id[37];
  long long storage_quota_gb;
  char *password; /* decrypted, owned */
} instance_row_t;

static int load_instance(sb_fleet_ctx_t *ctx, const char *id, instance_row_t *row, bool lock,
                         bool with_password, sb_error_t *err) {
  memset(row, 0, sizeof *row);
  const char *p[] = {id};
  PGresult *res = sb_db_query(
      ctx->db,
      lock ? "SELECT status, database_tier, coalesce(shared_rds_id::text, ''), "
             "coalesce(dedicated_rds_id::text, ''), database_name, database_user, "
             "database_password_enc, secret_key_id, user_id, storage_quota_gb "
             "FROM instances WHERE id = $1 FOR UPDATE"
           : "SELECT status, database_tier, coalesce(shared_rds_id::text, ''), "
             "coalesce(dedicated_rds_id::text, ''), database_name, database_user, "
             "database_password_enc, secret_key_id, user_id, storage_quota_gb "
             "FROM instances WHERE id = $1",
      1, p, err);
  if (!res) return -1;
  if (PQntuples(res) == 0) {
    PQclear(res);
    fail_code(err, SB_ERR_NOT_FOUND, "no instance %s", id);
    return -1;
  }
  snprintf(row->status, sizeof row->status, "%s", PQgetvalue(res, 0, 0));
  snprintf(row->tier, sizeof row->tier, "%s", PQgetvalue(res, 0, 1));
  snprintf(row->shared, sizeof row->shared, "%s", PQgetvalue(res, 0, 2));
  snprintf(row->dedicated, sizeof row->dedicated, "%s", PQgetvalue(res, 0, 3));
  snprintf(row->dbname, sizeof row->dbname, "%s", PQgetvalue(res, 0, 4));
  snprintf(row->role, sizeof row->role, "%s", PQgetvalue(res, 0, 5));
  snprintf(row->user_id, sizeof row->user_id, "%s", PQgetvalue(res, 0, 8));
  row->storage_quota_gb = atoll(PQgetvalue(res, 0, 9));
  int rc = 0;
  if (with_password && !PQgetisnull(res, 0, 6)) {
    char context[96];
    snprintf(context, sizeof context, "instances.database_password_enc:%s", id);
    rc = unseal(ctx, context, PQgetvalue(res, 0, 7), PQgetvalue(res, 0, 6), &row->password, err);
  }
  PQclear(res);
  return rc;
}

static void forget_instance(instance_row_t *row) {
  if (row->password) {
    explicit_bzero(row->password, strlen(row->password));
    free(row->password);
  }
  row->password = NULL;
}

/* requested -> provisioning: a shared server with room, or wait for one. */
static sb_job_outcome_t place_requested(sb_fleet_ctx_t *ctx, const char *id, int *delay,
                                        sb_error_t *err) {
  sb_decision_t place = {0};
  instance_row_t row;
  sb_job_outcome_t out = SB_JOB_RETRY;
  if (sb_db_begin(ctx->db, err) != 0) return SB_JOB_RETRY;
  if (load_instance(ctx, id, &row, true, false, err) != 0) goto done;
  if (strcmp(row.status, "requested") != 0) {
    out = SB_JOB_DONE; /* someone else moved it on: the caller looks again */
    goto done;
  }
  char server[37], new_server[256];
  if (place_shared(ctx, row.storage_quota_gb, id, server, new_server, &place, err) != 0) goto done;
  if (!server[0]) {
    sb_db_rollback(ctx->db, NULL);
    if (new_server[0] && request_server(ctx, new_server, err) != 0) goto done;
    *delay = 10;
    sb_error_set(err, "no shared server has room yet%s",
                 new_server[0] ? "; a new one is being made" : "");
    out = SB_JOB_WAIT;
    goto done;
  }
  const char *up[] = {id, server};
  char event_id[37], payload[128];
  snprintf(payload, sizeof payload, "{\"shared_rds_id\": \"%s\"}", server);
  if (sb_db_exec_params(ctx->db,
                        "UPDATE instances SET status = 'provisioning', shared_rds_id = $2 "
                        "WHERE id = $1 AND status = 'requested'",
                        2, up, err) != 0 ||
      emit(ctx, "placed", id, server, "Placed on a shared server", payload, event_id, err) != 0 ||
      record(ctx, &place, event_id, err) != 0 || sb_db_commit(ctx->db, err) != 0)
    goto done;
  if (new_server[0] && request_server(ctx, new_server, err) != 0)
    sb_warn("provision", "requesting a new shared server: %s", err->msg);
  out = SB_JOB_DONE;
done:
  if (ctx->db->tx_depth > 0) sb_db_rollback(ctx->db, NULL);
  sb_decision_clear(&place);
  return out;
}

/* Marks an instance failed for good and gives back its place; may run inside the
 * caller's transaction (a job dying). An instance that is gone is nothing to do. */
static int mark_failed(sb_fleet_ctx_t *ctx, const char *id, const char *reason, sb_error_t *err) {
  sb_error_t e2;
  int depth = ctx->db->tx_depth;
  if (sb_db_begin(ctx->db, &e2) != 0) return -1;
  instance_row_t row;
  int rc = -1;
  if (load_instance(ctx, id, &row, true, false, &e2) != 0) {
    if (strcmp(e2.sqlstate, SB_ERR_NOT_FOUND) == 0) rc = 0;
    goto done;
  }
  if (strcmp(row.status, "requested") != 0 && strcmp(row.status, "provisioning") != 0) {
    rc = 0;
    goto done;
  }
  const char *p[] = {id, reason};
  if (sb_db_exec_params(ctx->db,
                        "UPDATE instances SET status = 'failed', status_reason = $2 WHERE id = $1",
                        2, p, &e2) != 0 ||
      (strcmp(row.status, "provisioning") == 0 && release_capacity(ctx, row.shared, &e2) != 0) ||
      emit(ctx, "failed", id, row.shared[0] ? row.shared : NULL, reason, NULL, NULL, &e2) != 0)
    goto done;
  rc = sb_db_commit(ctx->db, &e2);
done:
  if (ctx->db->tx_depth > depth) sb_db_rollback(ctx->db, NULL);
  if (rc != 0) sb_error_set(err, "%s (and marking it failed: %s)", reason, e2.msg);
  return rc;
}

/* The dedicated server of an instance: create it when it is still provisioning. */
static int ensure_dedicated(sb_fleet_ctx_t *ctx, const instance_row_t *row, sb_server_t *srv,
                            sb_error_t *err) {
  char status[16];
  if (load_server(ctx, TIER_DEDICATED, row->dedicated, srv, status, err) != 0) return -1;
  if (strcmp(status, "active") == 0 && srv->port) return 0;
  if (ctx->driver->server_create(ctx->driver, srv, err) != 0) return -1;
  if (sb_db_begin(ctx->db, err) != 0) return -1;
  const char *p[] = {row->dedicated};
  if (save_endpoint(ctx, TIER_DEDICATED, row->dedicated, srv, err) != 0 ||
      sb_db_exec_params(ctx->db,
                        "UPDATE dedicated_rds_instances SET status = 'active' WHERE id = $1", 1, p,
                        err) != 0 ||
      sb_db_commit(ctx->db, err) != 0) {
    sb_db_rollback(ctx->db, NULL);
    return -1;
  }
  return 0;
}

static sb_job_outcome_t job_provision(sb_fleet_ctx_t *ctx, const sb_job_t *job, int *delay,
                                      sb_error_t *err) {
  instance_row_t row;
  if (load_instance(ctx, job->instance_id, &row, false, false, err) != 0)
    return strcmp(err->sqlstate, SB_ERR_NOT_FOUND) == 0 ? SB_JOB_FAIL : SB_JOB_RETRY;
  if (strcmp(row.status, "requested") == 0) {
    sb_job_outcome_t o = place_requested(ctx, job->instance_id, delay, err);
    if (o != SB_JOB_DONE) return o;
    if (load_instance(ctx, job->instance_id, &row, false, false, err) != 0) return SB_JOB_RETRY;
  }
  if (strcmp(row.status, "provisioning") != 0) return SB_JOB_DONE; /* done, deleted, failed */
  forget_instance(&row);
  if (load_instance(ctx, job->instance_id, &row, false, true, err) != 0) return SB_JOB_RETRY;

  sb_server_t srv;
  int rc = strcmp(row.tier, "dedicated") == 0
               ? ensure_dedicated(ctx, &row, &srv, err)
               : load_server(ctx, TIER_SHARED, row.shared, &srv, NULL, err);
  if (rc == 0) rc = ctx->driver->database_create(ctx->driver, &srv, row.dbname, row.role,
                                                row.password, err);
  forget_instance(&row);
  if (rc != 0) {
    forget_server(&srv); /* after the last attempt, sb_fleet_job_dead fails the instance */
    return SB_JOB_RETRY;
  }
  /* The database exists: the instance is active (only if still provisioning). */
  char port[16];
  snprintf(port, sizeof port, "%d", srv.pooler_port ? srv.pooler_port : srv.port);
  const char *p[] = {job->instance_id, srv.host, port};
  forget_server(&srv);
  if (sb_db_begin(ctx->db, err) != 0) return SB_JOB_RETRY;
  PGresult *res = sb_db_query(ctx->db,
                              "UPDATE instances SET status = 'active', provisioned_at = now(), "
                              "database_host = $2, database_port = $3 "
                              "WHERE id = $1 AND status = 'provisioning' RETURNING id",
                              3, p, err);
  if (!res) goto fail;
  bool moved = PQntuples(res) == 1;
  PQclear(res);
  if (moved && emit(ctx, "active", job->instance_id, row.shared[0] ? row.shared : NULL,
                    "Instance is ready", NULL, NULL, err) != 0)
    goto fail;
  if (sb_db_commit(ctx->db, err) != 0) return SB_JOB_RETRY;
  return SB_JOB_DONE;
fail:
  sb_db_rollback(ctx->db, NULL);
  return SB_JOB_RETRY;
}

/* ---- jobs: suspend, resume, deprovision ------------------------------------------------------ */

/* The server an instance lives on (shared or dedicated). */
static int instance_server(sb_fleet_ctx_t *ctx, const instance_row_t *row, sb_server_t *srv,
                           sb_error_t *err) {
  if (strcmp(row->tier, "dedicated") == 0)
    return load_server(ctx, TIER_DEDICATED, row->dedicated, srv, NULL, err);
  return load_server(ctx, TIER_SHARED, row->shared, srv, NULL, err);
}

static sb_job_outcome_t job_set_login(sb_fleet_ctx_t *ctx, const sb_job_t *job, bool login,
                                      sb_error_t *err) {
  instance_row_t row;
  if (load_instance(ctx, job->instance_id, &row, false, false, err) != 0) return SB_JOB_RETRY;
  const char *from = login ? "suspended" : "active";
  if (strcmp(row.status, from) != 0) return SB_JOB_DONE; /* already done, or moot */
  sb_server_t srv;
  if (instance_server(ctx, &row, &srv, err) != 0) return SB_JOB_RETRY;
  int rc = ctx->driver->role_set_login(ctx->driver, &srv, row.role, login, err);
  forget_server(&srv);
  if (rc != 0) return SB_JOB_RETRY;
  if (sb_db_begin(ctx->db, err) != 0) return SB_JOB_RETRY;
  const char *p[] = {job->instance_id, job->payload};
  PGresult *res = login ? sb_db_query(ctx->db,
                                      "UPDATE instances SET status = 'active', suspended_at = NULL, "
                                      "status_reason = NULL WHERE id = $1 AND status = 'suspended' "
                                      "RETURNING id",
                                      1, p, err)
                        : sb_db_query(ctx->db,
                                      "UPDATE instances SET status = 'suspended', suspended_at = "
                                      "now(), status_reason = coalesce($2::jsonb->>'reason', "
                                      "'operator') WHERE id = $1 AND status = 'active' RETURNING id",
                                      2, p, err);
  if (!res) goto fail;
  bool moved = PQntuples(res) == 1;
  PQclear(res);
  if (moved && emit(ctx, login ? "resumed" : "suspended", job->instance_id, NULL,
                    login ? "Instance resumed: logins allowed again"
                          : "Instance suspended: logins refused, sessions ended",
                    job->payload, NULL, err) != 0)
    goto fail;
  return sb_db_commit(ctx->db, err) == 0 ? SB_JOB_DONE : SB_JOB_RETRY;
fail:
  sb_db_rollback(ctx->db, NULL);
  return SB_JOB_RETRY;
}

/* The hook point before a database is dropped: a final backup, recorded with the
 * expiry the backups policy gives it. */
static int final_backup(sb_fleet_ctx_t *ctx, const char *id, const instance_row_t *row,
                        const sb_server_t *srv, sb_error_t *err) {
  char dir[1024], path[1200], key[256];
  time_t now = time(NULL);
  snprintf(dir, sizeof dir, "%s/backups/%s", sb_config()->data_dir, id);
  snprintf(key, sizeof key, "%s/pre_delete-%lld.dump", id, (long long)now);
  snprintf(path, sizeof path, "%s/backups/%s", sb_config()->data_dir, key);
  if (sb_mkdir_p(dir, 0700, err) != 0) return -1;
  int64_t size = 0;
  if (ctx->driver->database_dump(ctx->driver, srv, row->dbname, path, &size, err) != 0) return -1;
  char *bytes = sb_read_file(path, NULL, err);
  if (!bytes) return -1;
  char sha[65];
  sb_sha256_hex(bytes, (size_t)size, sha);
  free(bytes);

  char input[256];
  snprintf(input, sizeof input,
           "{\"backup_type\": \"pre_delete\", \"tier\": \"%s\", \"completed_at\": %lld}", row->tier,
           (long long)now);
  sb_decision_t d = {0};
  lua_State *L = decide(ctx, "backups", "expiry", input, &d, err);
  if (!L) return -1;
  long long expires = answer_integer(L, "expires_at");
  end_decision(ctx);
  char size_s[32], completed[32], expires_s[32], bucket[1100], event_id[37];
  snprintf(size_s, sizeof size_s, "%lld", (long long)size);
  snprintf(completed, sizeof completed, "%lld", (long long)now);
  snprintf(expires_s, sizeof expires_s, "%lld", expires);
  snprintf(bucket, sizeof bucket, "%s/backups", sb_config()->data_dir);
  const char *p[] = {id, size_s, bucket, key, sha, completed, expires_s};
  int rc = -1;
  if (sb_db_begin(ctx->db, err) != 0) goto done;
  if (sb_db_exec_params(ctx->db,
                        "INSERT INTO backups (instance_id, backup_type, status, size_bytes, "
                        "s3_bucket, s3_key, checksum_sha256, started_at, completed_at, expires_at) "
                        "VALUES ($1, 'pre_delete', 'completed', $2, $3, $4, $5, to_timestamp($6), "
                        "to_timestamp($6), to_timestamp($7))",
                        7, p, err) != 0 ||
      emit(ctx, "backup.completed", id, NULL, "Final backup before deletion", NULL, event_id,
           err) != 0 ||
      record(ctx, &d, event_id, err) != 0 || sb_db_commit(ctx->db, err) != 0) {
    sb_db_rollback(ctx->db, NULL);
    goto done;
  }
  rc = 0;
done:
  sb_decision_clear(&d);
  return rc;
}

static sb_job_outcome_t job_deprovision(sb_fleet_ctx_t *ctx, const sb_job_t *job, int *delay,
                                        sb_error_t *err) {
  instance_row_t row;
  if (load_instance(ctx, job->instance_id, &row, false, false, err) != 0) return SB_JOB_RETRY;
  if (strcmp(row.status, "deleting") != 0) return SB_JOB_DONE;
  /* Never beside the provisioning job: its database_create would make again what this
   * drops. It sees `deleting` and stops; it is made to run now if it waits. No new one
   * can come: an instance gets one provisioning job, with its request. */
  const char *pp[] = {job->instance_id};
  PGresult *pres = sb_db_query(ctx->db,
                               "WITH nudge AS (UPDATE jobs SET run_at = now() "
                               "  WHERE dedupe_key = 'provision:' || $1 AND status = 'queued' "
                               "  AND run_at > now() RETURNING id) "
                               "SELECT EXISTS (SELECT 1 FROM jobs WHERE dedupe_key = "
                               "'provision:' || $1 AND status IN ('queued', 'running'))",
                               1, pp, err);
  if (!pres) return SB_JOB_RETRY;
  bool provisioning = PQgetvalue(pres, 0, 0)[0] == 't';
  PQclear(pres);
  if (provisioning) {
    *delay = 1;
    sb_error_set(err, "waiting for the provisioning job of %s to finish", job->instance_id);
    return SB_JOB_WAIT;
  }
  bool has_server = row.shared[0] || row.dedicated[0];
  if (has_server) {
    sb_server_t srv;
    if (instance_server(ctx, &row, &srv, err) != 0) return SB_JOB_RETRY;
    /* A backup only when there is a database to back up: a retry after the drop, or an
     * instance that never got one, skips it. */
    sb_server_health_t h;
    bool reachable = ctx->driver->server_probe(ctx->driver, &srv, &h, err) == 0 && h.ok;
    PGresult *res;
    bool backed_up = false;
    const char *p[] = {job->instance_id};
    res = sb_db_query(ctx->db,
                      "SELECT 1 FROM backups WHERE instance_id = $1 AND backup_type = 'pre_delete' "
                      "AND status = 'completed' AND created_at > now() - interval '1 day'",
                      1, p, err);
    if (res) {
      backed_up = PQntuples(res) > 0;
      PQclear(res);
    }
    int rc = 0;
    if (reachable && !backed_up && strcmp(row.tier, "shared") == 0) {
      rc = final_backup(ctx, job->instance_id, &row, &srv, err);
      if (rc != 0 && strstr(err->msg, "does not exist")) rc = 0; /* never made: nothing to keep */
    }
    if (rc == 0 && strcmp(row.tier, "dedicated") == 0) {
      if (reachable && !backed_up) {
        rc = final_backup(ctx, job->instance_id, &row, &srv, err);
        if (rc != 0 && strstr(err->msg, "does not exist")) rc = 0;
      }
      if (rc == 0) rc = ctx->driver->server_destroy(ctx->driver, &srv, err);
    } else if (rc == 0) {
      rc = ctx->driver->database_drop(ctx->driver, &srv, row.dbname, row.role, err);
    }
    forget_server(&srv);
    if (rc != 0) return SB_JOB_RETRY;
  }
  if (sb_db_begin(ctx->db, err) != 0) return SB_JOB_RETRY;
  const char *p[] = {job->instance_id};
  PGresult *res = sb_db_query(ctx->db,
                              "UPDATE instances SET status = 'deleted', deleted_at = now() "
                              "WHERE id = $1 AND status = 'deleting' RETURNING id",
                              1, p, err);
  if (!res) goto fail;
  bool moved = PQntuples(res) == 1;
  PQclear(res);
  if (moved) {
    if (release_capacity(ctx, job->shared_rds_id, err) != 0) goto fail;
    if (row.dedicated[0]) {
      const char *dp[] = {row.dedicated};
      if (sb_db_exec_params(ctx->db,
                            "UPDATE dedicated_rds_instances SET status = 'retired' WHERE id = $1",
                            1, dp, err) != 0)
        goto fail;
    }
    if (emit(ctx, "deleted", job->instance_id, row.shared[0] ? row.shared : NULL,
             "Instance deleted: database and role dropped", NULL, NULL, err) != 0)
      goto fail;
  }
  return sb_db_commit(ctx->db, err) == 0 ? SB_JOB_DONE : SB_JOB_RETRY;
fail:
  sb_db_rollback(ctx->db, NULL);
  return SB_JOB_RETRY;
}

/* ---- job: server.create ------------------------------------------------------------------- */

static sb_job_outcome_t job_server_create(sb_fleet_ctx_t *ctx, const sb_job_t *job,
                                          sb_error_t *err) {
  char id[37];
  snprintf(id, sizeof id, "%s", job->shared_rds_id);
  if (!id[0]) {
    /* Step 1: the row, with the admin password sealed before the server exists, so a
     * crash after initdb never loses it. The job remembers the row. */
    char pw[33], key_id[SB_KEY_ID_LEN + 1], context[96], name[32], *param = NULL;
    sb_uuid_v4(id);
    snprintf(name, sizeof name, "shared-%.8s", id);
    snprintf(context, sizeof context, "shared_rds_instances.admin_password_enc:%s", id);
    if (sb_random_token(pw, 32, err) != 0) return SB_JOB_RETRY;
    int s = seal(ctx, context, pw, &param, key_id, err);
    explicit_bzero(pw, sizeof pw);
    if (s != 0) return SB_JOB_RETRY;
    char maxdb[16];
    snprintf(maxdb, sizeof maxdb, "%ld", sb_config()->max_databases_per_server);
    const char *p[] = {id, name, sb_config()->fleet_driver, param, key_id, job->payload, maxdb};
    int rc = sb_db_begin(ctx->db, err);
    if (rc == 0)
      rc = sb_db_exec_params(
          ctx->db,
          "INSERT INTO shared_rds_instances (id, rds_instance_id, driver, status, admin_user, "
          "admin_password_enc, secret_key_id, host, max_databases, storage_total_gb) "
          "VALUES ($1, $2, $3, 'provisioning', 'solobase_admin', $4, $5, '127.0.0.1', "
          "coalesce(($6::jsonb->>'max_databases')::int, $7::int), "
          "coalesce(($6::jsonb->>'storage_total_gb')::numeric, 100))",
          7, p, err);
    if (rc == 0) {
      const char *jp[] = {job->id, id};
      rc = sb_db_exec_params(ctx->db, "UPDATE jobs SET shared_rds_id = $2 WHERE id = $1", 2, jp, err);
    }
    if (rc == 0) rc = emit(ctx, "server.provisioning", NULL, id, "Creating a shared server", NULL, NULL, err);
    if (rc == 0) rc = sb_db_commit(ctx->db, err);
    else sb_db_rollback(ctx->db, NULL);
    free(param);
    if (rc != 0) return SB_JOB_RETRY;
  }
  sb_server_t srv;
  char status[16];
  if (load_server(ctx, TIER_SHARED, id, &srv, status, err) != 0) return SB_JOB_RETRY;
  if (strcmp(status, "provisioning") != 0) {
    forget_server(&srv);
    return SB_JOB_DONE;
  }
  int rc = ctx->driver->server_create(ctx->driver, &srv, err);
  if (rc != 0) {
    forget_server(&srv);
    if (job->attempts >= job->max_attempts) {
      const char *p[] = {id};
      sb_db_exec_params(ctx->db, "UPDATE shared_rds_instances SET status = 'failed' WHERE id = $1",
                        1, p, NULL);
      return SB_JOB_FAIL;
    }
    return SB_JOB_RETRY;
  }
  if (sb_db_begin(ctx->db, err) != 0) return SB_JOB_RETRY;
  const char *p[] = {id};
  char payload[128];
  snprintf(payload, sizeof payload, "{\"rds_instance_id\": \"%s\", \"port\": %d, \"pooler_port\": %d}",
           srv.name, srv.port, srv.pooler_port);
  if (save_endpoint(ctx, TIER_SHARED, id, &srv, err) != 0 ||
      sb_db_exec_params(ctx->db,
                        "UPDATE shared_rds_instances SET status = 'active' WHERE id = $1", 1, p,
                        err) != 0 ||
      emit(ctx, "server.active", NULL, id, "Shared server ready", payload, NULL, err) != 0 ||
      /* Requests waiting for room try again now. */
      sb_db_exec_params(ctx->db,
                        "UPDATE jobs SET run_at = now() WHERE kind = 'instance.provision' "
                        "AND status = 'queued' AND instance_id IN "
                        "(SELECT id FROM instances WHERE status = 'requested')",
                        0, NULL, err) != 0 ||
      sb_db_commit(ctx->db, err) != 0) {
    forget_server(&srv);
    sb_db_rollback(ctx->db, NULL);
    return SB_JOB_RETRY;
  }
  sb_info("fleet", "shared server %s is active on port %d (PgBouncer %d)", srv.name, srv.port,
          srv.pooler_port);
  forget_server(&srv);
  return SB_JOB_DONE;
}

/* ---- jobs: health and capacity --------------------------------------------------------------- */

static sb_job_outcome_t job_health_checks(sb_fleet_ctx_t *ctx, sb_error_t *err) {
  PGresult *res = sb_db_query(
      ctx->db,
      "SELECT id, 'shared' FROM shared_rds_instances WHERE status IN ('active', 'degraded') "
      "UNION ALL SELECT id, 'dedicated' FROM dedicated_rds_instances "
      "WHERE status IN ('active', 'degraded')",
      0, NULL, err);
  if (!res) return SB_JOB_RETRY;
  int rc = 0;
  for (int i = 0; i < PQntuples(res) && rc == 0; i++) {
    char dedupe[64], payload[64];
    snprintf(dedupe, sizeof dedupe, "health:%s", PQgetvalue(res, i, 0));
    snprintf(payload, sizeof payload, "{\"tier\": \"%s\"}", PQgetvalue(res, i, 1));
    bool shared = strcmp(PQgetvalue(res, i, 1), "shared") == 0;
    sb_job_enqueue_t j = {.kind = "server.health_check", .dedupe_key = dedupe,
                          .payload = shared ? "{\"tier\": \"shared\"}" : payload,
                          .shared_rds_id = shared ? PQgetvalue(res, i, 0) : NULL,
                          .max_attempts = 1};
    /* A dedicated server's id travels in the payload. */
    char dpayload[128];
    if (!shared) {
      snprintf(dpayload, sizeof dpayload, "{\"tier\": \"dedicated\", \"id\": \"%s\"}",
               PQgetvalue(res, i, 0));
      j.payload = dpayload;
    }
    rc = sb_jobs_enqueue(ctx->db, &j, NULL, NULL, err);
  }
  PQclear(res);
  return rc == 0 ? SB_JOB_DONE : SB_JOB_RETRY;
}

/* Starts a created server of this engine's driver that is down, and writes back the
 * ports it came up on. */
static int restart_server(sb_fleet_ctx_t *ctx, tier_t tier, const char *id, sb_server_t *srv,
                          sb_error_t *err) {
  if (ctx->driver->server_ensure_running(ctx->driver, srv, err) != 0) return -1;
  return save_endpoint(ctx, tier, id, srv, err);
}

/* Whether this engine's driver runs the server (the only one that can restart it). */
static bool driven_here(sb_fleet_ctx_t *ctx, tier_t tier, const char *id) {
  char *sql = sb_xasprintf("SELECT 1 FROM %s WHERE id = $1 AND driver = $2", server_table(tier));
  const char *p[] = {id, ctx->driver->name};
  PGresult *res = sb_db_query(ctx->db, sql, 2, p, NULL);
  free(sql);
  bool ours = res && PQntuples(res) == 1;
  if (res) PQclear(res);
  return ours;
}

/* Writes a probe's result on the server's row, with server.degraded on its first failure
 * and server.recovered when a degraded one answers again. */
static int record_health(sb_fleet_ctx_t *ctx, tier_t tier, const char *id, const char *name,
                         const sb_server_health_t *h, bool was_degraded, sb_error_t *err) {
  bool shared = tier == TIER_SHARED;
  char dbs[16], gb[32], latency[32];
  snprintf(dbs, sizeof dbs, "%d", h->databases);
  snprintf(gb, sizeof gb, "%.3f", (double)h->total_bytes / 1073741824.0);
  snprintf(latency, sizeof latency, "%.2f", h->latency_ms);
  if (sb_db_begin(ctx->db, err) != 0) return -1;
  char *sql;
  PGresult *res;
  if (h->ok) {
    sql = sb_xasprintf("UPDATE %s SET last_health_check_at = now(), last_health_error = NULL, "
                       "consecutive_failures = 0, storage_used_gb = $2%s, "
                       "status = CASE WHEN status = 'degraded' THEN 'active' ELSE status END "
                       "WHERE id = $1",
                       server_table(tier), shared ? ", observed_databases = $3" : "");
    const char *p[] = {id, gb, dbs};
    res = sb_db_query(ctx->db, sql, shared ? 3 : 2, p, err);
  } else {
    sql = sb_xasprintf("UPDATE %s SET last_health_check_at = now(), last_health_error = $2, "
                       "consecutive_failures = consecutive_failures + 1, status = 'degraded' "
                       "WHERE id = $1",
                       server_table(tier));
    const char *p[] = {id, h->error};
    res = sb_db_query(ctx->db, sql, 2, p, err);
  }
  free(sql);
  if (!res) goto fail;
  PQclear(res);
  char payload[768];
  if (h->ok && was_degraded) {
    snprintf(payload, sizeof payload, "{\"latency_ms\": %s, \"databases\": %d}", latency,
             h->databases);
    if (emit(ctx, "server.recovered", NULL, shared ? id : NULL, "Server healthy again", payload,
             NULL, err) != 0)
      goto fail;
  } else if (!h->ok && !was_degraded) {
    sb_warn("fleet", "server %s failed its health check: %s", name, h->error);
    const char *ep[] = {shared ? id : NULL, h->error, name};
    if (sb_db_exec_params(ctx->db,
                          "INSERT INTO instance_events (event_type, shared_rds_id, description, "
                          "payload, actor) VALUES ('server.degraded', $1, "
                          "'Server failed its health check; no new databases until it recovers', "
                          "jsonb_build_object('error', $2::text, 'server', $3::text), 'engine')",
                          3, ep, err) != 0)
      goto fail;
  }
  return sb_db_commit(ctx->db, err);
fail:
  sb_db_rollback(ctx->db, NULL);
  return -1;
}

/* Probes a server. One that fails is marked degraded first (so the record holds even if
 * what follows hangs); when this engine's driver runs it, it is started again and
 * probed once more. */
static sb_job_outcome_t job_health_check(sb_fleet_ctx_t *ctx, const sb_job_t *job,
                                         sb_error_t *err) {
  bool shared = job->shared_rds_id[0] != '\0';
  char id[37] = "";
  if (shared) snprintf(id, sizeof id, "%s", job->shared_rds_id);
  else {
    const char *p[] = {job->payload};
    PGresult *res = sb_db_query(ctx->db, "SELECT coalesce($1::jsonb->>'id', '')", 1, p, err);
    if (!res) return SB_JOB_RETRY;
    snprintf(id, sizeof id, "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
  }
  tier_t tier = shared ? TIER_SHARED : TIER_DEDICATED;
  sb_server_t srv;
  char status[16];
  if (load_server(ctx, tier, id, &srv, status, err) != 0) return SB_JOB_FAIL;
  sb_job_outcome_t out = SB_JOB_FAIL;
  sb_server_health_t h = {0};
  if (ctx->driver->server_probe(ctx->driver, &srv, &h, err) != 0) goto done;
  bool was_degraded = strcmp(status, "degraded") == 0;
  if (!h.ok) {
    out = SB_JOB_RETRY;
    if (record_health(ctx, tier, id, srv.name, &h, was_degraded, err) != 0) goto done;
    was_degraded = true;
    out = SB_JOB_DONE;
    sb_error_t e2;
    if (!driven_here(ctx, tier, id)) goto done;
    if (restart_server(ctx, tier, id, &srv, &e2) != 0) {
      sb_warn("fleet", "cannot restart server %s: %s", srv.name, e2.msg);
      goto done;
    }
    sb_info("fleet", "restarted server %s after a failed health check", srv.name);
    memset(&h, 0, sizeof h);
    if (ctx->driver->server_probe(ctx->driver, &srv, &h, &e2) != 0 || !h.ok) goto done;
  }
  out = record_health(ctx, tier, id, srv.name, &h, was_degraded, err) == 0 ? SB_JOB_DONE
                                                                            : SB_JOB_RETRY;
done:
  forget_server(&srv);
  return out;
}

/* Asks the placement policy whether the fleet needs another shared server now (the spec:
 * "When reaching 80% capacity (120 databases), create new shared RDS"). */
static sb_job_outcome_t job_capacity_check(sb_fleet_ctx_t *ctx, sb_error_t *err) {
  if (sb_db_begin(ctx->db, err) != 0) return SB_JOB_RETRY;
  char server[37], new_server[256];
  sb_decision_t d = {0};
  /* A nominal 1 GB request, not taken: only the threshold answer matters. */
  int rc = place_shared(ctx, 1, NULL, server, new_server, &d, err);
  sb_decision_clear(&d);
  sb_db_rollback(ctx->db, NULL); /* never keep the place it took */
  if (rc != 0) return SB_JOB_RETRY;
  if (new_server[0]) {
    if (request_server(ctx, new_server, err) != 0) return SB_JOB_RETRY;
    sb_info("fleet", "capacity check: a new shared server is wanted");
  }
  return SB_JOB_DONE;
}

/* Removes finished jobs after a week, in batches. */
static sb_job_outcome_t job_cleanup(sb_fleet_ctx_t *ctx, sb_error_t *err) {
  for (int i = 0; i < 100; i++) {
    PGresult *res = sb_db_query(ctx->db,
                                "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs WHERE status IN "
                                "('succeeded', 'canceled') AND finished_at < now() - interval '7 days' "
                                "LIMIT 5000)",
                                0, NULL, err);
    if (!res) return SB_JOB_RETRY;
    int n = atoi(PQcmdTuples(res));
    PQclear(res);
    if (n < 5000) break;
  }
  return SB_JOB_DONE;
}

/* ---- dispatch ------------------------------------------------------------------------------ */

sb_job_outcome_t sb_fleet_run_job(sb_fleet_ctx_t *ctx, const sb_job_t *job, int *delay_s,
                                  sb_error_t *err) {
  *delay_s = 0;
  if (!ctx->driver) {
    sb_error_set(err, "no fleet driver in this process");
    return SB_JOB_RETRY;
  }
  if (strcmp(job->kind, "instance.provision") == 0) return job_provision(ctx, job, delay_s, err);
  if (strcmp(job->kind, "instance.suspend") == 0) return job_set_login(ctx, job, false, err);
  if (strcmp(job->kind, "instance.resume") == 0) return job_set_login(ctx, job, true, err);
  if (strcmp(job->kind, "instance.deprovision") == 0) return job_deprovision(ctx, job, delay_s, err);
  if (strcmp(job->kind, "server.create") == 0) return job_server_create(ctx, job, err);
  if (strcmp(job->kind, "fleet.health_checks") == 0) return job_health_checks(ctx, err);
  if (strcmp(job->kind, "server.health_check") == 0) return job_health_check(ctx, job, err);
  if (strcmp(job->kind, "fleet.capacity_check") == 0) return job_capacity_check(ctx, err);
  if (strcmp(job->kind, "jobs.cleanup") == 0) return job_cleanup(ctx, err);
  sb_error_set(err, "no handler for jobs of kind %s", job->kind);
  return SB_JOB_FAIL;
}

int sb_fleet_job_dead(void *ud, sb_db_t *db, const sb_job_t *job, const char *error,
                      sb_error_t *err) {
  if (strcmp(job->kind, "instance.provision") != 0 || !job->instance_id[0]) return 0;
  sb_fleet_ctx_t ctx = *(sb_fleet_ctx_t *)ud;
  ctx.db = db;
  char reason[600];
  snprintf(reason, sizeof reason, "provisioning failed: %s", error);
  return mark_failed(&ctx, job->instance_id, reason, err);
}

char *sb_instance_credentials(sb_fleet_ctx_t *ctx, const char *instance_id, sb_error_t *err) {
  instance_row_t row;
  if (load_instance(ctx, instance_id, &row, false, true, err) != 0) return NULL;
  if (!row.shared[0] && !row.dedicated[0]) {
    forget_instance(&row);
    fail_code(err, SB_ERR_CONFLICT, "instance %s has no server yet (%s)", instance_id, row.status);
    return NULL;
  }
  sb_server_t srv;
  if (instance_server(ctx, &row, &srv, err) != 0) {
    forget_instance(&row);
    return NULL;
  }
  char *url = sb_fleet_tenant_url(&srv, row.dbname, row.role, row.password);
  forget_server(&srv);
  forget_instance(&row);
  return url;
}

int sb_fleet_restart_servers(sb_fleet_ctx_t *ctx, sb_error_t *err) {
  const char *p[] = {ctx->driver->name};
  PGresult *res = sb_db_query(
      ctx->db,
      "SELECT id, 'shared' FROM shared_rds_instances WHERE driver = $1 "
      "AND status IN ('active', 'degraded') UNION ALL SELECT id, 'dedicated' "
      "FROM dedicated_rds_instances WHERE driver = $1 AND status IN ('active', 'degraded')",
      1, p, err);
  if (!res) return -1;
  int failed = 0;
  for (int i = 0; i < PQntuples(res); i++) {
    tier_t tier = strcmp(PQgetvalue(res, i, 1), "shared") == 0 ? TIER_SHARED : TIER_DEDICATED;
    const char *id = PQgetvalue(res, i, 0);
    sb_server_t srv;
    sb_error_t e;
    if (load_server(ctx, tier, id, &srv, NULL, &e) != 0 ||
        restart_server(ctx, tier, id, &srv, &e) != 0) {
      sb_warn("fleet", "cannot restart server %s: %s", id, e.msg);
      failed++;
    }
    forget_server(&srv);
  }
  int n = PQntuples(res);
  PQclear(res);
  if (n) sb_info("fleet", "%d of %d local servers running", n - failed, n);
  return 0;
}
