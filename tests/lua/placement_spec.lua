-- policies/placement.lua: least-loaded shared server, and when to open another at 80 %.
local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
local H = dofile(here .. "/policy_helper.lua")
local P = H.load("placement")

local NEW = { max_databases = 150, storage_total_gb = 100 }

local function server(id, count, fields)
  local s = { id = id, status = "active", current_databases = count, max_databases = 150,
              storage_used_gb = 10, storage_total_gb = 100 }
  for k, v in pairs(fields or {}) do s[k] = v end
  return s
end

local function place(servers, opening, size)
  local out = P.place({ request = { storage_quota_gb = size or 1 }, servers = servers,
                        opening = opening or false })
  H.assert_contract("placement", "place", out)
  return out
end

describe("placement.place", function()
  it("places on a server at 118 without opening another (119 < 120)", function()
    H.assert_equal({ server_id = "a", open_new_server = false }, place({ server("a", 118) }))
  end)

  it("places the 120th database at 119 and opens a new server (80 % of 150)", function()
    H.assert_equal({ server_id = "a", open_new_server = true, new_server = NEW },
                   place({ server("a", 119) }))
  end)

  it("still places on a server at 120 and opens a new one", function()
    H.assert_equal({ server_id = "a", open_new_server = true, new_server = NEW },
                   place({ server("a", 120) }))
  end)

  it("places on a server at 149 (the last room) and opens", function()
    local out = place({ server("a", 149) })
    assert.are.equal("a", out.server_id)
    assert.is_true(out.open_new_server)
  end)

  it("does not place on a full server at 150 and opens", function()
    H.assert_equal({ reason = "no shared server has room", open_new_server = true,
                     new_server = NEW }, place({ server("a", 150) }))
  end)

  it("opens a server when there is none", function()
    H.assert_equal({ reason = "no shared server has room", open_new_server = true,
                     new_server = NEW }, place({}))
    H.assert_equal({ reason = "no shared server has room", open_new_server = true,
                     new_server = NEW }, P.place({ request = { storage_quota_gb = 1 } }))
  end)

  it("never opens a second server while one is being created", function()
    H.assert_equal({ server_id = "a", open_new_server = false }, place({ server("a", 119) }, true))
    H.assert_equal({ reason = "no shared server has room", open_new_server = false },
                   place({ server("a", 150) }, true))
    H.assert_equal({ reason = "no shared server has room", open_new_server = false }, place({}, true))
  end)

  it("picks the least loaded server (ORDER BY current_databases ASC)", function()
    local out = place({ server("a", 90), server("b", 12), server("c", 40) })
    H.assert_equal({ server_id = "b", open_new_server = false }, out)
  end)

  it("breaks ties by storage used, then by id", function()
    assert.are.equal("b", place({ server("a", 5, { storage_used_gb = 30 }),
                                  server("b", 5, { storage_used_gb = 12.5 }) }).server_id)
    assert.are.equal("a", place({ server("b", 5), server("a", 5), server("c", 5) }).server_id)
  end)

  it("skips servers that are not active", function()
    for _, status in ipairs({ "provisioning", "degraded", "draining", "retired", "failed" }) do
      local out = place({ server("a", 1, { status = status }), server("b", 119) })
      assert.are.equal("b", out.server_id, status)
      assert.is_true(out.open_new_server, status)
    end
  end)

  it("skips servers without storage for the new quota, exactly at the edge", function()
    local full = server("a", 1, { storage_used_gb = 99.5 })
    assert.are.equal("b", place({ full, server("b", 50) }, false, 1).server_id)
    local exact = server("a", 1, { storage_used_gb = 99 })
    assert.are.equal("a", place({ exact, server("b", 50) }, false, 1).server_id)
  end)

  it("opens when the chosen server fills its storage and no other has room", function()
    local out = place({ server("a", 3, { storage_used_gb = 99 }) }, false, 1)
    assert.are.equal("a", out.server_id)
    assert.is_true(out.open_new_server)
    out = place({ server("a", 3, { storage_used_gb = 98 }) }, false, 1)
    assert.is_false(out.open_new_server)
  end)

  it("does not open while another active server is below the threshold", function()
    -- a takes the 120th database, b stays at 119
    H.assert_equal({ server_id = "a", open_new_server = false },
                   place({ server("b", 119), server("a", 119) }))
    H.assert_equal({ server_id = "b", open_new_server = false },
                   place({ server("a", 130), server("b", 40) }))
    local out = place({ server("a", 119), server("b", 120) })
    assert.are.equal("a", out.server_id)
    assert.is_true(out.open_new_server)
  end)

  it("ignores below-threshold servers that cannot take a database", function()
    local out = place({ server("a", 125), server("b", 10, { status = "draining" }) })
    assert.are.equal("a", out.server_id)
    assert.is_true(out.open_new_server)
  end)

  it("computes the threshold exactly in integers for any max_databases", function()
    -- max 10: threshold 8; max 7: ceil(5.6) = 6; max 1: 1
    assert.is_false(place({ server("a", 6, { max_databases = 10 }) }).open_new_server)
    assert.is_true(place({ server("a", 7, { max_databases = 10 }) }).open_new_server)
    assert.is_false(place({ server("a", 4, { max_databases = 7 }) }).open_new_server)
    assert.is_true(place({ server("a", 5, { max_databases = 7 }) }).open_new_server)
    assert.is_true(place({ server("a", 0, { max_databases = 1 }) }).open_new_server)
  end)

  it("with a request key, spreads over the servers within one database of the least loaded", function()
    local servers = { server("a", 3), server("b", 4), server("c", 9), server("d", 3) }
    local seen = {}
    for i = 1, 400 do
      local out = P.place({ request = { storage_quota_gb = 1, key = "instance-" .. i },
                            servers = servers, opening = false })
      H.assert_contract("placement", "place", out)
      seen[out.server_id] = (seen[out.server_id] or 0) + 1
    end
    assert.is_nil(seen.c)                       -- 9 is more than one above the least loaded
    for _, id in ipairs({ "a", "b", "d" }) do   -- each gets its share
      assert.is_true((seen[id] or 0) > 60, id .. " got " .. tostring(seen[id]))
    end
  end)

  it("with a request key, the same key always gets the same server", function()
    local servers = { server("a", 3), server("b", 3), server("c", 4) }
    local first = P.place({ request = { storage_quota_gb = 1, key = "k" }, servers = servers }).server_id
    for _ = 1, 10 do
      assert.are.equal(first, P.place({ request = { storage_quota_gb = 1, key = "k" },
                                        servers = servers }).server_id)
    end
  end)

  it("with a request key, keeps the fill even: no server ends more than two above another", function()
    local servers = {}
    for i = 1, 10 do servers[i] = server(string.format("s%02d", i), 0) end
    for n = 1, 900 do
      local out = P.place({ request = { storage_quota_gb = 0, key = "req" .. n }, servers = servers })
      for _, s in ipairs(servers) do
        if s.id == out.server_id then s.current_databases = s.current_databases + 1 end
      end
    end
    local lo, hi = math.huge, 0
    for _, s in ipairs(servers) do
      lo, hi = math.min(lo, s.current_databases), math.max(hi, s.current_databases)
    end
    assert.is_true(hi - lo <= 2, ("spread %d..%d"):format(lo, hi))
  end)

  it("with a request key, still never chooses a server without room", function()
    local servers = { server("a", 150), server("b", 149), server("c", 150) }
    for i = 1, 50 do
      local out = P.place({ request = { storage_quota_gb = 1, key = "x" .. i }, servers = servers })
      assert.are.equal("b", out.server_id)
    end
  end)

  it("passes its own examples", function()
    H.assert_examples("placement")
  end)

  it("is pure: no globals, no state, input untouched", function()
    H.assert_pure("placement")
  end)
end)
