-- wrk script for scripts/bench: the same request every time (the Cookie header from wrk -H:
-- the browser-like header of scripts/bench, with the run's one 256-character session value).
dofile(os.getenv("BENCH_D") .. "/report.lua")
