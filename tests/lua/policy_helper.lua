-- Shared by the policy specs (tests/lua/*_spec.lua): load a policy plainly or in a
-- sandbox like the engine's, compare answers strictly (an integer never equals a
-- float), and check every answer against the contract the core validates.
-- Not a spec itself: busted runs only *_spec.lua files.

local assert = require("luassert")

local H = {}

-- the repository root, from this file's own path, so specs run from any directory
local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."
H.root = here .. "/../.."

function H.path(name)
  return H.root .. "/policies/" .. name .. ".lua"
end

function H.load(name)
  return dofile(H.path(name))
end

-- Deep equality where 3 and 3.0 differ. Returns true, or false and where they differ.
function H.equal(a, b, where)
  where = where or "output"
  if type(a) ~= type(b) then
    return false, where .. ": " .. type(a) .. " vs " .. type(b)
  end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) or a ~= b then
      return false, where .. ": " .. math.type(a) .. " " .. tostring(a) .. " vs " ..
                    math.type(b) .. " " .. tostring(b)
    end
    return true
  end
  if type(a) ~= "table" then
    if a ~= b then return false, where .. ": " .. tostring(a) .. " vs " .. tostring(b) end
    return true
  end
  for k, v in pairs(a) do
    local ok, why = H.equal(v, b[k], where .. "." .. tostring(k))
    if not ok then return false, why end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, where .. "." .. tostring(k) .. ": missing" end
  end
  return true
end

function H.assert_equal(expected, actual)
  local ok, why = H.equal(actual, expected)
  assert.is_true(ok, why)
end

function H.copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = H.copy(x) end
  return c
end

-- The engine's sandbox (core/policy.h): safe base functions, read-only string, table,
-- math and utf8. os is left out on purpose: policies get time from their input; so is
-- rawset, which core/policy.c does not expose. Reading an undefined global or writing
-- any global raises.
local BASE = { "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen",
               "select", "tonumber", "tostring", "type", "pcall", "xpcall",
               "setmetatable", "getmetatable" }

local function read_only(lib, name)
  return setmetatable({}, {
    __index = lib,
    __newindex = function(_, k) error("write to " .. name .. "." .. tostring(k), 2) end,
  })
end

function H.sandbox()
  local env = {}
  for _, n in ipairs(BASE) do env[n] = _G[n] end
  env.unpack = table.unpack
  for _, n in ipairs({ "string", "table", "math", "utf8" }) do env[n] = read_only(_G[n], n) end
  return setmetatable(env, {
    __index = function(_, k) error("read of undefined global '" .. tostring(k) .. "'", 2) end,
    __newindex = function(_, k) error("global write '" .. tostring(k) .. "'", 2) end,
  })
end

-- Loads the policy in a fresh sandbox; raises if loading touches a global.
function H.load_sandboxed(name)
  local chunk = assert(loadfile(H.path(name), "t", H.sandbox()))
  local M = chunk()
  assert.is_table(M)
  return M
end

-- Runs f(input) counting VM instructions; fails beyond the engine's default budget.
H.BUDGET = 1000000
function H.count_instructions(f, input)
  local n = 0
  debug.sethook(function() n = n + 1 end, "", 1)
  local ok, out = pcall(f, input)
  debug.sethook()
  assert(ok, out)
  return n, out
end

---------------------------------------------------------------------------------------
-- Contracts, as the core validates them: required fields present, no others, types.

local function is_int(v) return math.type(v) == "integer" end
local function is_bool(v) return type(v) == "boolean" end
local function is_str(v) return type(v) == "string" end
local function is_num(v) return type(v) == "number" and v == v end
local function one_of(...)
  local set = {}
  for _, v in ipairs({ ... }) do set[v] = true end
  return function(v) return set[v] == true end
end
local function nonneg_int(v) return is_int(v) and v >= 0 end
local function pos_int(v) return is_int(v) and v > 0 end
local function pos_num(v) return is_num(v) and v > 0 end

-- fields: name -> { check, required }; returns nil or a message
local function shape(t, fields, where)
  if type(t) ~= "table" then return where .. " is not a table" end
  for k in pairs(t) do
    if fields[k] == nil then return where .. " has field '" .. tostring(k) .. "' outside the contract" end
  end
  for k, f in pairs(fields) do
    local v = t[k]
    if v == nil then
      if f[2] then return where .. "." .. k .. " is missing" end
    elseif not f[1](v) then
      return where .. "." .. k .. " has a bad value " .. tostring(v)
    end
  end
  return nil
end

local function array(t, where)
  if type(t) ~= "table" then return where .. " is not a table" end
  local n = #t
  for k in pairs(t) do
    if not is_int(k) or k < 1 or k > n then return where .. " is not an array" end
  end
  return nil
end

local LINE = {
  code = { one_of("base", "storage_overage", "api_overage"), true },
  description = { is_str, true },
  quantity = { is_num, true },
  unit_cents = { is_num, true },
  amount_cents = { nonneg_int, true },
}

-- returns nil or a message; the sum of amount_cents in *sum
local function lines(t, where)
  local err = array(t, where)
  if err then return err end
  local sum, seen = 0, {}
  for i, l in ipairs(t) do
    err = shape(l, LINE, where .. "[" .. i .. "]")
    if err then return err end
    if seen[l.code] then return where .. " has two '" .. l.code .. "' lines" end
    seen[l.code] = true
    if l.code ~= "base" and l.quantity == 0 then return where .. " has an empty " .. l.code end
    sum = sum + l.amount_cents
  end
  if not seen.base then return where .. " has no base line" end
  return nil, sum
end

H.contract = {
  provisioning = {
    decide = function(o)
      if type(o) ~= "table" then return "output is not a table" end
      if o.allowed == false then
        return shape(o, { allowed = { is_bool, true }, reason = { is_str, true } }, "output")
      end
      return shape(o, {
        allowed = { function(v) return v == true end, true },
        database_tier = { one_of("shared", "dedicated"), true },
        compute_tier = { one_of("lambda", "container", "dedicated"), true },
        size = { is_str, true },
        storage_quota_gb = { nonneg_int, true },
        api_requests_quota_daily = { nonneg_int, true },
      }, "output")
    end,
  },
  placement = {
    place = function(o)
      local err = shape(o, {
        server_id = { is_str, false },
        reason = { is_str, false },
        open_new_server = { is_bool, true },
        new_server = { function(v) return type(v) == "table" end, false },
      }, "output")
      if err then return err end
      if (o.server_id == nil) ~= (o.reason ~= nil) then
        return "output.reason must be present exactly when server_id is nil"
      end
      if o.open_new_server ~= (o.new_server ~= nil) then
        return "output.new_server must be present exactly when open_new_server is true"
      end
      if o.new_server then
        return shape(o.new_server, { max_databases = { pos_int, true },
                                     storage_total_gb = { pos_num, true } }, "output.new_server")
      end
      return nil
    end,
  },
  quotas = {
    check = function(o)
      local err = shape(o, {
        status = { one_of("ok", "warning", "exceeded"), true },
        action = { one_of("none", "notify", "throttle", "block_writes"), true },
        resource = { one_of("storage", "api_requests"), false },
      }, "output")
      if err then return err end
      if (o.status == "ok") ~= (o.resource == nil) then
        return "output.resource must be absent exactly when status is ok"
      end
      return nil
    end,
  },
  pricing = {
    daily = function(o)
      local err = shape(o, { total_cents = { nonneg_int, true },
                             lines = { function(v) return type(v) == "table" end, true } }, "output")
      if err then return err end
      local sum
      err, sum = lines(o.lines, "output.lines")
      if err then return err end
      if sum ~= o.total_cents then return "output.total_cents is not the sum of the lines" end
      return nil
    end,
    invoice = function(o)
      local err = shape(o, { lines = { function(v) return type(v) == "table" end, true },
                             subtotal_cents = { nonneg_int, true },
                             tax_cents = { nonneg_int, true },
                             total_cents = { nonneg_int, true } }, "output")
      if err then return err end
      local sum
      err, sum = lines(o.lines, "output.lines")
      if err then return err end
      if sum ~= o.subtotal_cents then return "output.subtotal_cents is not the sum of the lines" end
      if o.total_cents ~= o.subtotal_cents + o.tax_cents then
        return "output.total_cents is not subtotal + tax"
      end
      return nil
    end,
  },
  backups = {
    schedule = function(o)
      return shape(o, {
        due = { is_bool, true },
        next_at = { is_int, true },
        interval_hours = { pos_int, true },
        retention_days = { pos_int, true },
        pitr_window_minutes = { pos_int, true },
        expires_at = { is_int, true },
      }, "output")
    end,
    expiry = function(o)
      return shape(o, { expires_at = { is_int, true } }, "output")
    end,
  },
  lifecycle = {
    on_event = function(o)
      return shape(o, {
        action = { one_of("none", "notify", "suspend", "resume"), true },
        reason = { is_str, true },
        notify = { is_str, false },
        grace_period_ends_at = { is_int, false },
      }, "output")
    end,
  },
}

function H.assert_contract(name, fn, output)
  local err = H.contract[name][fn](output)
  assert.is_nil(err, err)
end

---------------------------------------------------------------------------------------
-- Checks every policy spec runs on its policy.

-- Each of M.examples gives exactly its expected output, as the engine requires.
function H.assert_examples(name)
  local M = H.load(name)
  assert.is_table(M.examples)
  assert.is_true(#M.examples >= 3, name .. " needs at least 3 examples")
  for i, e in ipairs(M.examples) do
    assert.is_function(M[e.fn], name .. ".examples[" .. i .. "]: no function " .. tostring(e.fn))
    local out = M[e.fn](H.copy(e.input))
    local ok, why = H.equal(out, e.output)
    assert.is_true(ok, name .. ".examples[" .. i .. "] (" .. e.fn .. "): " .. tostring(why))
    H.assert_contract(name, e.fn, out)
  end
end

-- Loaded in the sandbox, every example: touches no global, does not modify its input,
-- answers the same twice (also after another input ran in between: no hidden state),
-- and stays far inside the instruction budget.
function H.assert_pure(name)
  local M = H.load_sandboxed(name)
  local examples = M.examples
  for i, e in ipairs(examples) do
    local input = H.copy(e.input)
    local n, first = H.count_instructions(M[e.fn], input)
    assert.is_true(n < H.BUDGET, name .. ".examples[" .. i .. "] used " .. n .. " instructions")
    H.assert_equal(e.input, input)
    local other = examples[i % #examples + 1]
    M[other.fn](H.copy(other.input))
    H.assert_equal(first, M[e.fn](input))
    H.assert_equal(e.input, input)
  end
end

return H
