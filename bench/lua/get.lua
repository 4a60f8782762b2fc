-- GET /api/jobs?id=X for X drawn at random from a file of stored ids; counts empty answers.
-- usage: wrk -s get.lua URL -- IDS_FILE
local ids = {}
empty = 0  -- global: done() reads it per thread

function init(args)
  for line in io.lines(args[1]) do
    if line ~= "" then ids[#ids + 1] = line end
  end
  math.randomseed(os.time())
end

function request()
  return wrk.format("GET", "/api/jobs?id=" .. ids[math.random(#ids)])
end

function response(status, headers, body)
  if status ~= 200 or body == "[]" then
    empty = empty + 1
  end
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("empty")
  end
  io.write("not-found: " .. total .. "\n")
end
