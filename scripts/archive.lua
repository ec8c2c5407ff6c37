-- archive.lua: removes what the spec says to archive, in batches.
--
--   solobase run archive [--dry-run] [--batch N]
--
-- The spec's statements:
--   DELETE FROM instance_logs WHERE created_at < CURRENT_TIMESTAMP - INTERVAL '90 days';
--   DELETE FROM instance_usage WHERE date < CURRENT_DATE - INTERVAL '2 years';
-- are run with the same conditions in batches of N rows (default 5,000), each batch its
-- own transaction, so a large backlog never holds long locks or one huge transaction.
-- Prints the rows removed per table. --dry-run (or `solobase run --dry-run`) counts
-- what would be removed and removes nothing.

local dry_run, batch = sb.dry_run, 5000
local i = 1
while i <= #arg do
  if arg[i] == "--dry-run" then dry_run = true
  elseif arg[i] == "--batch" then
    batch = math.tointeger(tonumber(arg[i + 1] or ""))
    if not batch or batch < 1 then error("--batch wants a positive integer", 0) end
    i = i + 1
  else
    error("unknown argument " .. arg[i] .. " (usage: archive [--dry-run] [--batch N])", 0)
  end
  i = i + 1
end

local targets = {
  { table = "instance_logs", key = "id",
    where = "created_at < CURRENT_TIMESTAMP - INTERVAL '90 days'" },
  { table = "instance_usage", key = "id",
    where = "date < CURRENT_DATE - INTERVAL '2 years'" },
}

for _, t in ipairs(targets) do
  if dry_run then
    local n = sb.db.one(string.format("SELECT count(*) AS n FROM %s WHERE %s", t.table, t.where)).n
    print(string.format("%-15s %d rows would be removed (dry run)", t.table, n))
  else
    local total = 0
    repeat
      local n = sb.db.exec(string.format(
        "DELETE FROM %s WHERE %s IN (SELECT %s FROM %s WHERE %s LIMIT $1 FOR UPDATE SKIP LOCKED)",
        t.table, t.key, t.key, t.table, t.where), batch)
      total = total + n
    until n < batch
    print(string.format("%-15s %d rows removed", t.table, total))
  end
end
