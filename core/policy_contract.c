/*
 * policy_contract.c: the answer of each policy function, checked (see
 * policy_contract.h). One checker per function, built from small field checks.
 */
#include "policy_contract.h"

#include <lauxlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *const sb_contract_required_policies[] = {
    "provisioning", "placement", "quotas", "pricing", "backups", "lifecycle", NULL,
};

typedef struct check {
  lua_State *L;
  int out, in;
  char *msg;
  size_t msglen;
  int failed;
} check_t;

static int breach(check_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int breach(check_t *c, const char *fmt, ...) {
  if (c->failed) return -1;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->msg, c->msglen, fmt, ap);
  va_end(ap);
  c->failed = 1;
  return -1;
}

/* Pushes out[name]; returns its type. */
static int get(check_t *c, const char *name) { return lua_getfield(c->L, c->out, name); }

static bool want(check_t *c, const char *name, int type, bool required) {
  int t = get(c, name);
  lua_pop(c->L, 1);
  if (t == LUA_TNIL) {
    if (required) breach(c, "answer has no '%s'", name);
    return false;
  }
  if (t != type) {
    breach(c, "'%s' must be a %s, got a %s", name, lua_typename(c->L, type), lua_typename(c->L, t));
    return false;
  }
  return true;
}

static bool want_bool(check_t *c, const char *name, bool *value) {
  if (!want(c, name, LUA_TBOOLEAN, true)) return false;
  get(c, name);
  *value = lua_toboolean(c->L, -1);
  lua_pop(c->L, 1);
  return true;
}

static void want_integer(check_t *c, const char *name, long long min, bool required) {
  int t = get(c, name);
  if (t == LUA_TNIL) {
    if (required) breach(c, "answer has no '%s'", name);
  } else if (!lua_isinteger(c->L, -1)) {
    breach(c, "'%s' must be an integer, got %s", name,
           t == LUA_TNUMBER ? "a float" : lua_typename(c->L, t));
  } else if (lua_tointeger(c->L, -1) < min) {
    breach(c, "'%s' must be at least %lld, got %lld", name, min,
           (long long)lua_tointeger(c->L, -1));
  }
  lua_pop(c->L, 1);
}

static void want_positive_number(check_t *c, const char *name) {
  if (!want(c, name, LUA_TNUMBER, true)) return;
  get(c, name);
  if (!(lua_tonumber(c->L, -1) > 0)) breach(c, "'%s' must be positive", name);
  lua_pop(c->L, 1);
}

/* values: "a|b|c". */
static bool want_enum(check_t *c, const char *name, const char *values, bool required) {
  if (!want(c, name, LUA_TSTRING, required)) return false;
  get(c, name);
  size_t len;
  const char *s = lua_tolstring(c->L, -1, &len);
  bool ok = false;
  for (const char *p = values; *p;) {
    size_t n = strcspn(p, "|");
    if (n == len && memcmp(p, s, n) == 0) ok = true;
    p += n + (p[n] == '|');
  }
  if (!ok) breach(c, "'%s' is '%.40s', want one of %s", name, s, values);
  lua_pop(c->L, 1);
  return ok;
}

static void want_absent(check_t *c, const char *name, const char *unless) {
  if (get(c, name) != LUA_TNIL) breach(c, "'%s' must be absent %s", name, unless);
  lua_pop(c->L, 1);
}

/* Every key of the answer is one of allowed ("a b c"). */
static void only_fields(check_t *c, int idx, const char *allowed) {
  lua_State *L = c->L;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1); /* value */
    if (lua_type(L, -1) != LUA_TSTRING) {
      lua_pop(L, 1);
      breach(c, "answer has a non-string key");
      return;
    }
    size_t len;
    const char *k = lua_tolstring(L, -1, &len);
    bool found = false;
    for (const char *p = allowed; *p && !found;) {
      size_t n = strcspn(p, " ");
      found = n == len && memcmp(p, k, n) == 0;
      p += n + (p[n] == ' ');
    }
    if (!found) {
      breach(c, "answer has a field '%.40s' outside the contract (allowed: %s)", k, allowed);
      lua_pop(L, 1);
      return;
    }
  }
}

static int check_provisioning_decide(check_t *c) {
  bool allowed;
  if (!want_bool(c, "allowed", &allowed)) return -1;
  if (!allowed) {
    want(c, "reason", LUA_TSTRING, true);
    only_fields(c, c->out, "allowed reason");
    return c->failed ? -1 : 0;
  }
  want_enum(c, "database_tier", "shared|dedicated", true);
  want_enum(c, "compute_tier", "lambda|container|dedicated", true);
  want(c, "size", LUA_TSTRING, true);
  want_integer(c, "storage_quota_gb", 0, true);
  want_integer(c, "api_requests_quota_daily", 0, true);
  only_fields(c, c->out,
              "allowed database_tier compute_tier size storage_quota_gb api_requests_quota_daily");
  return c->failed ? -1 : 0;
}

static int check_placement_place(check_t *c) {
  lua_State *L = c->L;
  bool open;
  if (get(c, "server_id") == LUA_TNIL) {
    want(c, "reason", LUA_TSTRING, true);
  } else if (lua_type(L, -1) != LUA_TSTRING) {
    breach(c, "'server_id' must be a string or nil");
  } else {
    /* The chosen server must be one the core offered. */
    bool offered = false;
    int chosen = lua_gettop(L), servers = chosen + 1;
    if (lua_getfield(L, c->in, "servers") == LUA_TTABLE) {
      lua_Integer n = (lua_Integer)lua_rawlen(L, servers);
      for (lua_Integer i = 1; i <= n && !offered; i++) {
        if (lua_geti(L, servers, i) == LUA_TTABLE) {
          lua_getfield(L, -1, "id");
          offered = lua_rawequal(L, -1, chosen);
          lua_pop(L, 1); /* id */
        }
        lua_pop(L, 1); /* server */
      }
    }
    lua_pop(L, 1); /* servers */
    if (!offered) breach(c, "'server_id' '%.40s' is not one of the servers offered",
                         lua_tostring(L, chosen));
    want_absent(c, "reason", "when a server is chosen");
  }
  lua_pop(L, 1);
  if (want_bool(c, "open_new_server", &open) && open) {
    if (get(c, "new_server") != LUA_TTABLE) {
      breach(c, "'new_server' must be a table when open_new_server is true");
    } else {
      check_t sub = *c;
      sub.out = lua_gettop(L);
      want_integer(&sub, "max_databases", 1, true);
      want_positive_number(&sub, "storage_total_gb");
      only_fields(&sub, sub.out, "max_databases storage_total_gb");
      c->failed = sub.failed;
    }
    lua_pop(L, 1);
  } else if (!c->failed) {
    want_absent(c, "new_server", "when open_new_server is false");
  }
  only_fields(c, c->out, "server_id reason open_new_server new_server");
  return c->failed ? -1 : 0;
}

static int check_quotas_check(check_t *c) {
  want_enum(c, "status", "ok|warning|exceeded", true);
  want_enum(c, "action", "none|notify|throttle|block_writes", true);
  get(c, "status");
  bool ok = lua_type(c->L, -1) == LUA_TSTRING && strcmp(lua_tostring(c->L, -1), "ok") == 0;
  lua_pop(c->L, 1);
  if (ok) want_absent(c, "resource", "when status is ok");
  else want_enum(c, "resource", "storage|api_requests", true);
  only_fields(c, c->out, "status action resource");
  return c->failed ? -1 : 0;
}

/* lines: array of {code, description, quantity, unit_cents, amount_cents}; *sum gets
 * the total of amount_cents. */
static void want_lines(check_t *c, lua_Integer *sum) {
  lua_State *L = c->L;
  *sum = 0;
  if (get(c, "lines") != LUA_TTABLE) {
    breach(c, "'lines' must be an array of line items");
    lua_pop(L, 1);
    return;
  }
  lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
  for (lua_Integer i = 1; i <= n && !c->failed; i++) {
    if (lua_geti(L, -1, i) != LUA_TTABLE) {
      breach(c, "lines[%lld] must be a table", (long long)i);
    } else {
      check_t sub = *c;
      sub.out = lua_gettop(L);
      want(&sub, "code", LUA_TSTRING, true);
      want(&sub, "description", LUA_TSTRING, true);
      want(&sub, "quantity", LUA_TNUMBER, true);
      want(&sub, "unit_cents", LUA_TNUMBER, true);
      want_integer(&sub, "amount_cents", 0, true);
      only_fields(&sub, sub.out, "code description quantity unit_cents amount_cents");
      if (sub.failed) {
        char inner[512];
        snprintf(inner, sizeof inner, "%s", c->msg);
        c->failed = 0;
        breach(c, "lines[%lld]: %s", (long long)i, inner);
      } else {
        lua_getfield(L, -1, "amount_cents");
        *sum += lua_tointeger(L, -1);
        lua_pop(L, 1);
      }
    }
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

static lua_Integer int_field(check_t *c, const char *name) {
  get(c, name);
  lua_Integer v = lua_tointeger(c->L, -1);
  lua_pop(c->L, 1);
  return v;
}

static int check_pricing_daily(check_t *c) {
  lua_Integer sum;
  want_integer(c, "total_cents", 0, true);
  want_lines(c, &sum);
  if (!c->failed && sum != int_field(c, "total_cents"))
    breach(c, "'total_cents' (%lld) is not the sum of the lines (%lld)",
           (long long)int_field(c, "total_cents"), (long long)sum);
  only_fields(c, c->out, "total_cents lines");
  return c->failed ? -1 : 0;
}

static int check_pricing_invoice(check_t *c) {
  lua_Integer sum;
  want_integer(c, "subtotal_cents", 0, true);
  want_integer(c, "tax_cents", 0, true);
  want_integer(c, "total_cents", 0, true);
  want_lines(c, &sum);
  if (!c->failed && sum != int_field(c, "subtotal_cents"))
    breach(c, "'subtotal_cents' is not the sum of the lines (%lld)", (long long)sum);
  if (!c->failed &&
      int_field(c, "total_cents") != int_field(c, "subtotal_cents") + int_field(c, "tax_cents"))
    breach(c, "'total_cents' is not subtotal_cents + tax_cents");
  only_fields(c, c->out, "lines subtotal_cents tax_cents total_cents");
  return c->failed ? -1 : 0;
}

static int check_backups_schedule(check_t *c) {
  bool due;
  want_bool(c, "due", &due);
  want_integer(c, "next_at", 0, true);
  want_integer(c, "interval_hours", 1, true);
  want_integer(c, "retention_days", 1, true);
  want_integer(c, "pitr_window_minutes", 1, true);
  want_integer(c, "expires_at", 0, true);
  only_fields(c, c->out,
              "due next_at interval_hours retention_days pitr_window_minutes expires_at");
  return c->failed ? -1 : 0;
}

static int check_backups_expiry(check_t *c) {
  want_integer(c, "expires_at", 0, true);
  only_fields(c, c->out, "expires_at");
  return c->failed ? -1 : 0;
}

static int check_lifecycle_on_event(check_t *c) {
  want_enum(c, "action", "none|notify|suspend|resume", true);
  want(c, "reason", LUA_TSTRING, true);
  want(c, "notify", LUA_TSTRING, false);
  want_integer(c, "grace_period_ends_at", 0, false);
  only_fields(c, c->out, "action reason notify grace_period_ends_at");
  return c->failed ? -1 : 0;
}

typedef struct contract {
  const char *policy;
  const char *fn;
  int (*check)(check_t *c);
} contract_t;

static const contract_t contracts[] = {
    {"provisioning", "decide", check_provisioning_decide},
    {"placement", "place", check_placement_place},
    {"quotas", "check", check_quotas_check},
    {"pricing", "daily", check_pricing_daily},
    {"pricing", "invoice", check_pricing_invoice},
    {"backups", "schedule", check_backups_schedule},
    {"backups", "expiry", check_backups_expiry},
    {"lifecycle", "on_event", check_lifecycle_on_event},
};

static const char *const fns_provisioning[] = {"decide", NULL};
static const char *const fns_placement[] = {"place", NULL};
static const char *const fns_quotas[] = {"check", NULL};
static const char *const fns_pricing[] = {"daily", "invoice", NULL};
static const char *const fns_backups[] = {"schedule", "expiry", NULL};
static const char *const fns_lifecycle[] = {"on_event", NULL};

const char *const *sb_contract_functions(const char *policy) {
  if (strcmp(policy, "provisioning") == 0) return fns_provisioning;
  if (strcmp(policy, "placement") == 0) return fns_placement;
  if (strcmp(policy, "quotas") == 0) return fns_quotas;
  if (strcmp(policy, "pricing") == 0) return fns_pricing;
  if (strcmp(policy, "backups") == 0) return fns_backups;
  if (strcmp(policy, "lifecycle") == 0) return fns_lifecycle;
  return NULL;
}

int sb_contract_check(lua_State *L, const char *policy, const char *fn, int out_idx, int in_idx,
                      char *msg, size_t msglen) {
  check_t c = {L, lua_absindex(L, out_idx), lua_absindex(L, in_idx), msg, msglen, 0};
  int top = lua_gettop(L);
  if (lua_type(L, c.out) != LUA_TTABLE) {
    breach(&c, "the answer must be a table, got %s", luaL_typename(L, c.out));
    return -1;
  }
  int rc = 0;
  for (size_t i = 0; i < sizeof contracts / sizeof contracts[0]; i++)
    if (strcmp(contracts[i].policy, policy) == 0 && strcmp(contracts[i].fn, fn) == 0)
      rc = contracts[i].check(&c);
  lua_settop(L, top);
  return rc;
}
