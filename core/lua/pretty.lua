--[[
pretty.lua: how the REPL shows values; sb.pretty in the REPL.

  format(value) -> string

Scalars are written as Lua would read them back (strings with %q, newlines as \n).
Tables are written as constructors: keys sorted (numbers in order first, then strings
alphabetically, then the rest by type), the array part without keys, nested tables
indented two spaces, an array of scalars on one line as { 1, 2, 3 } when short (else
as many items to a line as fit). A table met again inside itself is <cycle>; below
MAX_DEPTH levels a table is {...}. A table with a __tostring shows that. A read-only
proxy (an empty table whose metatable's __index is a table, as sb.config) shows the
table it reads from.

Query results (metatable __name "sb.db.rows", column names in order in
getmetatable(rows).__index.columns) are an aligned table as psql prints one: a header,
dashes joined by -+-, one line per row with | between columns, numbers right-aligned,
NULL empty, jsonb values as compact JSON, then (N rows).

The chunk is called with sb.json, used for jsonb values and sb.json.null; without it
(plain Lua) nested values in query results are written as Lua instead.
]]
local json = ...

local MAX_DEPTH = 8   -- tables below this level print as {...}
local SHORT = 72      -- widest one-line array, leaving room for the indent on 80 columns

local M = {}

local keywords = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
            repeat return then true until while]]):gmatch("%a+") do
  keywords[w] = true
end

local function is_null(v)
  return json ~= nil and v == json.null
end

local function quote(s)
  -- %q continues a string over a newline with a backslash; \n reads better here.
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end

local function scalar(v)
  if type(v) == "string" then return quote(v) end
  if is_null(v) then return "sb.json.null" end
  return tostring(v)
end

local type_rank = { number = 1, string = 2 }

local function key_less(a, b)
  local ra, rb = type_rank[type(a)] or 3, type_rank[type(b)] or 3
  if ra ~= rb then return ra < rb end
  if ra < 3 then return a < b end
  if type(a) ~= type(b) then return type(a) < type(b) end
  return tostring(a) < tostring(b)
end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") and not keywords[k] then return k end
  return "[" .. scalar(k) .. "]"
end

-- Display width: UTF-8 characters, or bytes when the text is not UTF-8.
local function width(s)
  return utf8.len(s) or #s
end

local escapes = { ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

local function one_line(s)
  return (s:gsub("%c", function(c) return escapes[c] or ("\\" .. c:byte()) end))
end

local format_value -- (v, depth, seen, indent) -> string

-- A nested value in a query result: compact JSON, as psql shows jsonb.
local function compact(v)
  if json then
    local ok, text = pcall(json.encode, v)
    if ok then return (text:gsub("\\/", "/")) end -- cjson escapes every slash
  end
  return one_line((format_value(v, 1, {}, ""):gsub("\n%s*", " ")))
end

-- The text of one field and whether it is right-aligned.
local function cell(v)
  if v == nil then return "", false end
  if type(v) == "number" then return tostring(v), true end
  if type(v) == "string" then return one_line(v), false end
  if is_null(v) then return "null", false end
  if type(v) == "table" then return compact(v), false end
  return one_line(tostring(v)), false
end

local function pad(s, w, right)
  local gap = string.rep(" ", w - width(s))
  return right and gap .. s or s .. gap
end

local function center(s, w)
  local gap = w - width(s)
  local left = gap // 2
  return string.rep(" ", left) .. s .. string.rep(" ", gap - left)
end

local function format_rows(rows, indent)
  local meta = getmetatable(rows).__index
  local columns = type(meta.columns) == "table" and meta.columns or {}
  if #columns == 0 then return quote(tostring(meta.command or "")) end
  local nrows = rawlen(rows)
  local widths, texts, right = {}, {}, {}
  for c, name in ipairs(columns) do widths[c] = width(name) end
  for r = 1, nrows do
    local row = rawget(rows, r)
    texts[r], right[r] = {}, {}
    for c, name in ipairs(columns) do
      local text, num = cell(type(row) == "table" and rawget(row, name) or nil)
      texts[r][c], right[r][c] = text, num
      if width(text) > widths[c] then widths[c] = width(text) end
    end
  end
  local lines = {}
  local function add(parts, sep)
    lines[#lines + 1] = (sep:sub(1, 1) .. table.concat(parts, sep) .. sep:sub(1, 1)):gsub("%s+$", "")
  end
  local header, dashes = {}, {}
  for c, name in ipairs(columns) do
    header[c] = center(name, widths[c])
    dashes[c] = string.rep("-", widths[c])
  end
  add(header, " | ")
  add(dashes, "-+-")
  for r = 1, nrows do
    local parts = {}
    for c = 1, #columns do parts[c] = pad(texts[r][c], widths[c], right[r][c]) end
    add(parts, " | ")
  end
  lines[#lines + 1] = string.format("(%d row%s)", nrows, nrows == 1 and "" or "s")
  return table.concat(lines, "\n" .. indent)
end

-- A long array of scalars: as many items to a line as fit in width.
local function fill(items, w)
  local lines, line = {}, items[1]
  for i = 2, #items do
    if #line + 2 + #items[i] > w then
      lines[#lines + 1] = line
      line = items[i]
    else
      line = line .. ", " .. items[i]
    end
  end
  lines[#lines + 1] = line
  return lines
end

local function format_table(t, depth, seen, indent)
  if seen[t] then return "<cycle>" end
  if depth > MAX_DEPTH then return "{...}" end
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  if #keys == 0 then return "{}" end
  table.sort(keys, key_less)
  local n = 0 -- the array part: 1..n all present
  while rawget(t, n + 1) ~= nil do n = n + 1 end
  seen[t] = true
  local inner = indent .. "  "
  local items, flat = {}, true
  for i, k in ipairs(keys) do
    local v = rawget(t, k)
    local text = format_value(v, depth + 1, seen, inner)
    if type(v) == "table" and text ~= "{}" then flat = false end
    if math.type(k) == "integer" and k >= 1 and k <= n then
      items[i] = text
    else
      items[i] = key_text(k) .. " = " .. text
    end
  end
  seen[t] = nil
  if flat and #keys == n then
    local line = "{ " .. table.concat(items, ", ") .. " }"
    if #line <= SHORT then return line end
    items = fill(items, SHORT - #inner)
  end
  return "{\n" .. inner .. table.concat(items, ",\n" .. inner) .. "\n" .. indent .. "}"
end

function format_value(v, depth, seen, indent)
  if type(v) ~= "table" then return scalar(v) end
  local mt = getmetatable(v)
  if type(mt) == "table" then
    if rawget(mt, "__name") == "sb.db.rows" and type(rawget(mt, "__index")) == "table" then
      return format_rows(v, indent)
    end
    if rawget(mt, "__tostring") then return tostring(v) end
    local index = rawget(mt, "__index")
    if next(v) == nil and type(index) == "table" then v = index end
  end
  return format_table(v, depth, seen, indent)
end

function M.format(value)
  return format_value(value, 1, {}, "")
end

return M
