-- POST /api/jobs with a fixed body; with an argument, every accepted id is appended to that file.
-- usage: wrk -s post.lua URL -- [IDS_FILE] [CONTAINER]
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"containers":["park"],"data":{"prompt":"hello"}}'

local out = nil

function init(args)
  if args[2] then
    wrk.body = '{"containers":["' .. args[2] .. '"],"data":{"prompt":"hello"}}'
  end
  if args[1] and args[1] ~= "" then
    out = io.open(args[1], "a")
    out:setvbuf("line")
  end
end

function response(status, headers, body)
  if out and status == 200 then
    out:write(body, "\n")
  end
end
