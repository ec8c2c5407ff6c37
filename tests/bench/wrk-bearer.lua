-- wrk script of tests/bench/run-events-bench: every request carries the API token
-- (docs/http-api.md, "Tokens"). Usage: SOLOBASE_TOKEN=sbt_... wrk -s wrk-bearer.lua URL
local token = os.getenv("SOLOBASE_TOKEN")
assert(token and token ~= "", "SOLOBASE_TOKEN is not set")
wrk.headers["Authorization"] = "Bearer " .. token
