-- wrk script for scripts/bench: every request carries a session cookie never sent before.
--   wrk ... -s distinct.lua URL PREFIX
-- Each wrk thread counts on its own (thread number in the value); PREFIX differs per run, so
-- no value repeats across runs either.
dofile(os.getenv("BENCH_D") .. "/report.lua")

local threads = 0
function setup(thread)
   thread:set("thread_no", threads)
   threads = threads + 1
end

local prefix, counter = "c", 0
function init(args)
   prefix = (args[1] or "c") .. "-" .. tostring(thread_no) .. "-"
end

function request()
   counter = counter + 1
   return wrk.format(nil, nil, { ["Cookie"] = "ory_kratos_session=" .. prefix .. counter })
end
