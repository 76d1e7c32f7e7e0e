-- wrk script for scripts/bench: every request carries a session cookie never sent before, in
-- a browser-like Cookie header:
--   <BENCH_COOKIE_OTHERS>ory_kratos_session=<256 characters>
--   wrk ... -s distinct.lua URL TAG
-- BENCH_COOKIE_OTHERS (the other cookies, "_ga=...; csrf_token_...=...; ") and
-- BENCH_SESSION_BASE (256 random base64url characters, new for every run of scripts/bench) come
-- from the environment. The session value is the start of the base, then TAG (different for
-- every wrk run), the wrk thread number and a 10-digit request counter: always 256 characters,
-- never the same twice. Built once per thread; a request costs one string.format.
dofile(os.getenv("BENCH_D") .. "/report.lua")

local SESSION_LEN = 256

local threads = 0
function setup(thread)
   thread:set("thread_no", threads)
   threads = threads + 1
end

local prefix, counter = nil, 0
function init(args)
   local others = os.getenv("BENCH_COOKIE_OTHERS") or ""
   local base = os.getenv("BENCH_SESSION_BASE") or string.rep("x", SESSION_LEN)
   local tag = (args[1] or "c") .. "_" .. tostring(thread_no) .. "_"
   local head = string.sub(base, 1, SESSION_LEN - 10 - #tag) .. tag
   prefix = others .. "ory_kratos_session=" .. head
end

function request()
   counter = counter + 1
   return wrk.format(nil, nil, { ["Cookie"] = prefix .. string.format("%010d", counter) })
end
