-- wrk script for scripts/bench: every request carries an opaque access token never sent
-- before, in Hydra's format (ory_at_<43 base64url>.<43 base64url>):
--   Authorization: Bearer ory_at_<43>.<33 - #TAG characters><TAG><10-digit counter>
--   wrk ... -s distinct-token.lua URL TAG
-- BENCH_TOKEN_BASE (an opaque token, new for every run of scripts/bench) comes from the
-- environment. The token is its start, then TAG (different for every wrk run), the wrk thread
-- number and a 10-digit request counter: always the base's length, never the same twice.
-- Built once per thread; a request costs one string.format.
dofile(os.getenv("BENCH_D") .. "/report.lua")

local threads = 0
function setup(thread)
   thread:set("thread_no", threads)
   threads = threads + 1
end

local prefix, counter = nil, 0
function init(args)
   local base = os.getenv("BENCH_TOKEN_BASE") or ("ory_at_" .. string.rep("x", 43) .. "." .. string.rep("y", 43))
   local tag = (args[1] or "c") .. "_" .. tostring(thread_no) .. "_"
   prefix = "Bearer " .. string.sub(base, 1, #base - 10 - #tag) .. tag
end

function request()
   counter = counter + 1
   return wrk.format(nil, nil, { ["Authorization"] = prefix .. string.format("%010d", counter) })
end
