/*
 * policy_contract.h: what each policy must answer, checked on every call.
 *
 * The core relies on the shape of each answer (which fields, which types, which
 * values), so the contracts live here in C, not in the policy files a broken edit
 * could loosen. docs/policies.md describes the same contracts for policy authors.
 */
#ifndef SB_POLICY_CONTRACT_H
#define SB_POLICY_CONTRACT_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

/* The functions policy must define; NULL for a policy without a contract (an
 * operator's own file, whose answers need only be plain data). */
const char *const *sb_contract_functions(const char *policy);
/* Names of the policies the core cannot run without. NULL-terminated. */
extern const char *const sb_contract_required_policies[];
/* Checks the answer at out_idx given the input at in_idx. Returns 0, or -1 with a
 * description of the breach (without file:line; the caller adds it) in msg. */
int sb_contract_check(lua_State *L, const char *policy, const char *fn, int out_idx, int in_idx,
                      char *msg, size_t msglen);

#endif
