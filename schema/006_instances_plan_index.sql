-- instances (plan_id) becomes (plan_id, user_id).
--
-- The engine runs its hot statements as generic plans (core/db.c), planned once per
-- connection. The provisioning inputs count a user's instances on a plan (user_id =
-- $2 AND plan_id = p.id); a connection that planned it while instances was small could
-- pick the plan_id index and then walk every instance on the plan for each request
-- (seen in tests/bench/provision_bench.c: a third of the sampled requests, each scan
-- growing with the table). With both columns in both indexes, either choice is one
-- short range scan. plan_id still leads, so the foreign key keeps its index.
CREATE INDEX instances_plan_id_user_id_idx ON instances (plan_id, user_id);
DROP INDEX instances_plan_id_idx;
