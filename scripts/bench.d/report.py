"""Turns the measurements of scripts/bench into BENCHMARKS.md and a summary on stdout.

Inputs come from R_* environment variables set by scripts/bench (see the end of that script).
"""
import csv
import datetime
import hashlib
import os
import platform
import re
import statistics
import subprocess
from collections import Counter

E = os.environ
NAMES = {
    1: "plain nginx, no check",
    2: "module, cache hit (one credential)",
    3: "module, cold miss (new credential every request)",
    4: "auth_request, uncached",
    5: "auth_request + proxy_cache hit",
}
TARGETS = [  # (label, numerator, denominator, minimum)
    ("(2)/(1) module hit vs plain nginx", 2, 1, 0.95),
    ("(2)/(5) module hit vs auth_request + proxy_cache", 2, 5, 1.5),
    ("(3)/(4) module miss vs auth_request uncached", 3, 4, 1.0),
]
RSS_TARGET_KB = 25 * 1024
REUSE_TARGET = 99.0


def sh(*cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()
    except Exception as e:  # noqa: BLE001 - a missing tool only blanks one line of the report
        return f"({cmd[0]}: {e})"


def read_tsv(path):
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f, delimiter="\t")]


def ms(us):
    return f"{us / 1000:.2f}"


def verdict(ok):
    return "met" if ok else "**MISSED**"


def rss_fields(s):
    r, a, f, t = (int(x) for x in s.split())
    return {"rss": r, "anon": a, "file": f, "threads": t}


def mb(kb):
    return f"{kb / 1024:.1f} MB"


def normalize(line):
    """An error.log line without its time, pid, connection number and client address."""
    m = re.match(r"^\S+ \S+ \[(\w+)\] \d+#\d+: (?:\*\d+ )?(.*)$", line)
    if not m:
        return "?", line
    level, msg = m.groups()
    msg = re.sub(r"client: [^,]+", "client: …", msg)
    msg = re.sub(r"client [0-9.:]+", "client …", msg)
    msg = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:…", msg)
    msg = re.sub(r'"(GET|HEAD) [^"]*"', r'"\1 …"', msg)
    msg = re.sub(r"\d+\.\d+\.\d+\.\d+", "…", msg)
    return level, msg


def log_summary(path):
    counts = Counter()
    levels = Counter()
    try:
        with open(path, errors="replace") as f:
            for line in f:
                level, msg = normalize(line.rstrip("\n"))
                levels[level] += 1
                counts[(level, msg)] += 1
    except FileNotFoundError:
        pass
    return levels, counts


def main():
    rows = read_tsv(E["R_RESULTS"])
    for r in rows:  # older result files had no per-CPU column
        r.setdefault("other_nginx_cpu", r["other_cpu"])
    bursts = []
    with open(E["R_BURSTS"]) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            bursts.append(row)

    by = {s: [r for r in rows if int(r["scenario"]) == s] for s in NAMES}
    med = {}
    for s, rs in by.items():
        if not rs:
            continue
        med[s] = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k not in ("round", "scenario")}
        med[s]["rounds"] = [r["rps"] for r in sorted(rs, key=lambda r: r["round"])]
        med[s]["non2xx_total"] = sum(r["non2xx"] for r in rs)
        med[s]["n499_total"] = sum(r["n499"] for r in rs)
        med[s]["other_max"] = max(r["other_cpu"] for r in rs)
        med[s]["other_nginx_max"] = max(r["other_nginx_cpu"] for r in rs)
        med[s]["status_errors_total"] = sum(r["status_errors"] for r in rs)
        med[s]["socket_errors_total"] = sum(r["socket_errors"] for r in rs)
        med[s]["whoami_total"] = sum(r["whoami"] for r in rs)
        med[s]["requests_total"] = sum(r["requests"] for r in rs)
        med[s]["reused_total"] = sum(r["whoami_reused"] for r in rs)

    missed = []
    out = []
    w = out.append

    # ---- header, machine
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    cpu_model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    nginx_v = sh(E["R_NGINX"], "-V")
    nginx_version = nginx_v.splitlines()[0].replace("nginx version: ", "") if nginx_v else "?"
    configure = next((l for l in nginx_v.splitlines() if l.startswith("configure arguments:")), "")
    configure = re.sub(r" --builddir=\S+", "", configure.replace("configure arguments: ", ""))
    git_head = sh("git", "-C", E["R_TOP"], "log", "-1", "--format=%h %s")
    git_dirty = sh("git", "-C", E["R_TOP"], "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")
    so = E["R_MODULE"]
    so_sha = hashlib.sha256(open(so, "rb").read()).hexdigest()[:16]
    so_mtime = datetime.datetime.fromtimestamp(os.path.getmtime(E["R_MODULE_SRC"]), datetime.timezone.utc)

    quick = E["R_QUICK"] == "1"
    w("# Benchmarks")
    w("")
    w(f"Generated by `scripts/bench` on {now}; the file is overwritten by every run."
      + (" **This is a `--quick` smoke run (1 round x 2 s): not for comparisons.**" if quick else ""))
    w("")
    w("```sh")
    w(E["R_COMMAND"])
    w("```")
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| CPUs (nproc) | {E['R_NCPU']} |")
    w(f"| CPU model | {cpu_model} |")
    w(f"| memory | {mem_kb // 1024} MB |")
    w(f"| kernel | {platform.system()} {platform.release()} ({platform.machine()}) |")
    w(f"| OS | {sh('sh', '-c', '. /etc/os-release && echo $PRETTY_NAME')} |")
    w(f"| nginx | {nginx_version}, vendored build: `{configure}` |")
    w(f"| rustc | {sh('rustc', '--version')} |")
    w(f"| module | `dist/modules/ngx_http_ory_session_module.so` built {so_mtime:%Y-%m-%d %H:%M UTC}, sha256 {so_sha}…; "
      f"repository at `{git_head}`" + (" with uncommitted changes in src/ (the .so may or may not include them)" if git_dirty else "") + " |")
    w(f"| load | {sh('wrk', '-v').splitlines()[0].split(' Copyright')[0]}; {sh('h2load', '--version')} |")
    w(f"| date | {now} |")
    w("")
    w("**The nginx binary is built `--with-debug`** (the test suite needs `error_log ... debug`). "
      "Every `ngx_log_debug` call site then costs a test-and-branch even when debug logging is off, "
      "and a few debug-only checks run: absolute requests/s are somewhat lower than with a "
      "release nginx. All scenarios run the same binary, so the ratios are fair; compare absolute "
      "numbers only with other runs of this script.")
    w("")

    # ---- method
    w("## Method")
    w("")
    w(f"- Everything on loopback. nginx under test: one worker process (`worker_processes 1`), "
      f"`worker_connections {E['R_WORKER_CONNECTIONS']}`. Kratos double: a second nginx, one worker, "
      "answering `GET …/sessions/whoami` with a canned 200 session (`scripts/bench.d/whoami.json`, "
      "the shape of jane's session in `t/lib/sessions.json`, `expires_at` in 2099), "
      "`default_type application/json`, HTTP/1.1 keep-alive without a request cap, one access-log "
      "line per call (`$connection $connection_requests`), which is how calls and connection reuse are counted.")
    w(f"- CPU pinning (`taskset`): {E['R_PINNING']}. The module's whoami client runs on a thread of "
      "the nginx worker, so pinning nginx to one CPU keeps it from borrowing the second core that "
      "`auth_request` cannot use either.")
    w("- The upstream of every scenario is the same: a `server` block of the nginx under test "
      "answering `return 200 \"ok\\n\"`, reached through an `upstream` with `keepalive 64`, "
      "`proxy_http_version 1.1`, `Connection \"\"`. Each request thus costs the worker a proxied "
      "request on top of whatever the check costs.")
    w(f"- Load: `wrk -t{E['R_THREADS']} -c{E['R_CONNECTIONS']} -d{E['R_DURATION']}s --latency`, "
      f"{E['R_ROUNDS']} round(s); in each round every scenario runs once, the order rotated from "
      "round to round; a 1 s warm-up of each scenario comes first (it also puts the hit credential "
      "in both caches). Tables show medians over rounds; p50/p99 are wrk's latency percentiles.")
    w("- (2), (1) and (5) send the same `Cookie: ory_kratos_session=<one value>`; (3) and (4) send "
      "a value never sent before on every request (wrk Lua counter, `scripts/bench.d/distinct.lua`). "
      "The module's cache keeps its defaults (10000 sessions, 60 s), so (3) also pays for inserting "
      "and evicting. (5) caches whoami answers with `proxy_cache` keyed on the cookie for 60 s.")
    w("- non-2xx: nginx logs every non-2xx answer (`access_log … if=$non2xx`, all scenarios alike); "
      "wrk's own count of status ≥ 400 and socket errors are checked too.")
    w("- CPU columns: CPU time of the nginx worker (all its threads), of the double's worker and of "
      "wrk, over the run's wall time (100% = one core).")
    w("")

    # ---- results table
    w("## Results")
    w("")
    w("| scenario | requests/s | p50 ms | p99 ms | req/s per round | nginx worker CPU (nginx thread + module thread) | double CPU | wrk CPU | others' CPU: all / on the nginx CPU (max) | whoami calls / request | non-2xx (+ 499 at wrk's stop) |")
    w("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for s, name in NAMES.items():
        if s not in med:
            continue
        m = med[s]
        per_req = m["whoami_total"] / m["requests_total"] if m["requests_total"] else 0
        w(f"| ({s}) {name} | {m['rps']:,.0f} | {ms(m['p50_us'])} | {ms(m['p99_us'])} | "
          f"{', '.join(f'{x:,.0f}' for x in m['rounds'])} | {m['nginx_cpu']:.0f}% ({m['nginx_main_cpu']:.0f} + {m['nginx_threads_cpu']:.0f}) | "
          f"{m['double_cpu']:.0f}% | {m['wrk_cpu']:.0f}% | {m['other_max']:.0f}% / {m['other_nginx_max']:.0f}% | {per_req:.3f} | "
          f"{int(m['non2xx_total'])} (+ {int(m['n499_total'])}) |")
    w("")
    w("CPU: percent of one core over the run (medians over rounds). *Others* is CPU time used by "
      "processes other than the two nginx workers and wrk (e.g. another build on the machine; a "
      "little loopback softirq time lands there too), on all CPUs and on the CPU the nginx under "
      f"test is pinned to. Before each run scripts/bench waits up to {E['R_QUIET_WAIT']} s for the "
      f"CPUs to go idle, and runs again (up to {E['R_RETRIES']} times, keeping the least "
      f"disturbed attempt) when others used more than {E.get('R_DISTURBED', '?')}% of a CPU during the run "
      f"({int(sum(r['attempts'] for r in rows)) - len(rows)} repeated runs this time)"
      + (f"; nginx, the double and wrk ran at niceness {E['R_NICE']}" if E.get("R_NICE", "0") != "0" else "")
      + ". 499: requests still waiting when wrk stopped and closed its "
      "connections (not errors of the check).")
    others = max((m["other_max"] for m in med.values()), default=0)
    if others > float(E.get("R_DISTURBED", 15)):
        w("")
        w(f"**Warning: other processes used up to {others:.0f}% of a CPU during some runs (the "
          "machine is shared); those numbers are disturbed, compare with care.**")
    w("")

    # ---- targets
    w("## Targets")
    w("")
    w("Ratios of requests/s: the median over rounds of the ratio within each round.")
    w("")
    w("| check | value | target | |")
    w("|---|---:|---:|---|")
    for label, a, b, target in TARGETS:
        if a in med and b in med:
            # Paired by round (the two runs were minutes apart at most): steadier than a ratio
            # of medians when the machine's speed drifts.
            per_round = [ra["rps"] / rb["rps"] for ra, rb in zip(sorted(by[a], key=lambda r: r["round"]),
                                                                  sorted(by[b], key=lambda r: r["round"]))]
            ratio = statistics.median(per_round)
            ok = ratio >= target
            if not ok:
                missed.append(f"{label}: {ratio:.2f} < {target}")
            rng = f" (rounds {min(per_round):.2f}–{max(per_round):.2f})" if len(per_round) > 1 else ""
            w(f"| {label} | {ratio:.2f}{rng} | ≥ {target} | {verdict(ok)} |")
    slow = [b for b in bursts if b["variant"] == "slow"]
    fast = [b for b in bursts if b["variant"] == "fast"]
    for label, bs in ((f"(6) whoami calls for a burst of {E['R_BURST']} first requests (answer slowed)", slow),
                      ("(6') the same against the fast double", fast)):
        calls = [int(b["whoami"]) for b in bs]
        ok = bool(calls) and all(c == 1 for c in calls)
        if not ok:
            missed.append(f"{label}: {calls}")
        w(f"| {label} | {', '.join(map(str, calls))} | == 1 | {verdict(ok)} |")
    calls, reused = int(E["R_MODULE_CALLS"]) + int(E["R_BURST_CALLS"]), int(E["R_MODULE_REUSED"]) + int(E["R_BURST_REUSED"])
    reuse = 100 * reused / calls if calls else 0
    ok = reuse >= REUSE_TARGET
    if not ok:
        missed.append(f"keep-alive reuse {reuse:.2f}% < {REUSE_TARGET}%")
    w(f"| module whoami calls on a reused keep-alive connection | {reuse:.2f}% ({reused:,} of {calls:,}; "
      f"{E['R_MODULE_CONNS']} connections) | ≥ {REUSE_TARGET:g}% | {verdict(ok)} |")
    rs, re_ = rss_fields(E["R_RSS_START"]), rss_fields(E["R_RSS_END"])
    for label, r in (("idle worker RSS, module loaded, after startup", rs),
                     ("idle worker RSS after the wrk rounds (cache full)", rss_fields(E["R_RSS_ROUNDS"])),
                     ("idle worker RSS after the run (rounds and bursts)", re_)):
        ok = r["rss"] <= RSS_TARGET_KB
        if not ok:
            missed.append(f"{label}: {mb(r['rss'])}")
        w(f"| {label} | {mb(r['rss'])} | ≤ 25 MB | {verdict(ok)} |")
    w("")
    if 1 in med and 5 in med:
        w(f"Ceiling of (2)/(5) in this set-up: (2) cannot beat (1) (it is (1) plus a check), so "
          f"(2)/(5) ≤ (1)/(5) = {med[1]['rps'] / med[5]['rps']:.2f}. Every scenario pays for a proxied "
          "request to the upstream in the same worker, which dilutes the difference between checks.")
        w("")
    if missed:
        w("**MISSED:** " + "; ".join(missed))
        w("")

    # ---- auth_request reuse, memory, bursts
    w("## Details")
    w("")
    if 4 in med:
        m = med[4]
        share = 100 * m["reused_total"] / m["whoami_total"] if m["whoami_total"] else 0
        w(f"- auth_request, uncached (4): {share:.1f}% of its whoami calls came on a reused connection "
          f"despite `keepalive 64`: an `auth_request` subrequest only needs the reply's headers, so nginx "
          f"closes the upstream connection instead of reading the body ({int(m['time_wait']):,} sockets in "
          "TIME-WAIT on the machine right after a run of (4)).")
    ref0, ref1, rr = rss_fields(E["R_RSS_REF_START"]), rss_fields(E["R_RSS_REF_END"]), rss_fields(E["R_RSS_ROUNDS"])
    fmt = lambda r: f"{mb(r['rss'])} (anon {mb(r['anon'])}, file {mb(r['file'])}, {r['threads']} thread{'s' if r['threads'] > 1 else ''})"
    w("- Worker memory, VmRSS from `/proc/<worker>/status` while idle:")
    w("")
    w("  | | nginx under test (module loaded, `ory_session on`) | reference: same binary and settings, no module |")
    w("  |---|---|---|")
    w(f"  | after startup | {fmt(rs)} | {fmt(ref0)} |")
    w(f"  | after the wrk rounds | {fmt(rr)} | — |")
    w(f"  | after the bursts ({E['R_BURST']} connections at once) | {fmt(re_)} | {fmt(ref1)} |")
    w("")
    w("  After the rounds the module's cache is full (10000 sessions from (3)). The 500-connection "
      "burst grows nginx's own memory too (connection and request pools that glibc keeps), as the "
      "reference column shows.")
    w(f"- Bursts: h2load `--h1 -n {E['R_BURST']} -c {E['R_BURST']}`, all with one cookie value never "
      f"sent before. (6): the double sends the whoami answer over about {E['R_SLOW_DELAY']} s "
      "(`limit_rate`), so every request arrives while the one call is open; (6'): the fast double.")
    w("")
    w("| burst | round | whoami calls | requests logged | 2xx | non-2xx | MISS | HIT | request time min–max s |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for b in bursts:
        w(f"| {'(6) slowed' if b['variant'] == 'slow' else chr(40) + '6' + chr(39) + ') fast'} | {b['round']} | "
          f"{b['whoami']} | {b['requests']} | {b['ok_2xx']} | {b['non_2xx']} | {b['miss']} | {b['hit']} | "
          f"{b['min_request_time']}–{b['max_request_time']} |")
    w("")

    # ---- logs
    w("## Logs")
    w("")
    non2xx = Counter()
    try:
        with open(E["R_NON2XX_LOG"]) as f:
            for line in f:
                p = line.split()
                non2xx[(p[1], p[2], p[3].removeprefix("cache="))] += 1
    except FileNotFoundError:
        pass
    total_non2xx = sum(non2xx.values())
    total_wrk = sum(int(med[s]["status_errors_total"]) for s in med)
    total_sock = sum(int(med[s]["socket_errors_total"]) for s in med)
    w(f"- Non-2xx answers logged by nginx: {total_non2xx}; wrk status errors: {total_wrk}; wrk socket errors: {total_sock}.")
    port_names = {port: name for name, port in (kv.split("=") for kv in E["R_PORTS"].split())}
    port_names[E["R_PORT_CHECK"]] = "sanity checks"
    for (port, status, cache), n in non2xx.most_common(10):
        why = " (requests wrk abandoned when it stopped)" if status == "499" else ""
        w(f"  - {port_names.get(port, 'port ' + port)}: status {status}, `$ory_session_cache_status` "
          f"`{cache}`: {n}{why}")
    if os.path.exists(E["R_UNEXPECTED_LOG"]) and os.path.getsize(E["R_UNEXPECTED_LOG"]):
        w(f"- The double got requests for unexpected paths: see {E['R_UNEXPECTED_LOG']}.")
    for label, path in (("nginx under test", E["R_MAIN_ERROR_LOG"]), ("Kratos double", E["R_DOUBLE_ERROR_LOG"])):
        levels, counts = log_summary(path)
        bad = sum(n for lv, n in levels.items() if lv in ("warn", "error", "crit", "alert", "emerg"))
        w(f"- error.log of the {label}: {sum(levels.values())} lines "
          f"({', '.join(f'{lv} {n}' for lv, n in levels.most_common()) or 'empty'}); warn or worse: {bad}.")
        for (lv, msg), n in counts.most_common(12):
            w(f"  - {n} × [{lv}] {msg[:220]}")
    w("")

    # ---- configs
    w("## Configurations")
    w("")
    w("Generated by `scripts/bench` from `scripts/bench.d/main.conf.in` (nginx under test), "
      "`scripts/bench.d/double.conf.in` (Kratos double; the canned body is `scripts/bench.d/whoami.json`) "
      "and `scripts/bench.d/idle.conf.in` (RSS reference, no module); wrk scripts: "
      "`scripts/bench.d/fixed.lua`, `scripts/bench.d/distinct.lua`, `scripts/bench.d/report.lua`. "
      f"Ports of this run: {E['R_PORTS']}. As run:")
    w("")
    for label, path in (("nginx under test", E["R_CONF_MAIN"]), ("Kratos double (whoami body elided)", E["R_CONF_DOUBLE"])):
        text = open(path).read()
        text = re.sub(r"return 200 '\{.*?\}';", "return 200 '<scripts/bench.d/whoami.json>';", text)
        w(f"<details><summary>{label}</summary>")
        w("")
        w("```nginx")
        w(text.rstrip())
        w("```")
        w("")
        w("</details>")
        w("")

    os.makedirs(os.path.dirname(os.path.abspath(E["R_OUTPUT"])), exist_ok=True)
    with open(E["R_OUTPUT"], "w") as f:
        f.write("\n".join(out) + "\n")

    # ---- stdout summary
    print()
    print(f"{'scenario':<52} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'nginx CPU':>10} {'whoami/req':>10}")
    for s, name in NAMES.items():
        if s in med:
            m = med[s]
            per_req = m["whoami_total"] / m["requests_total"] if m["requests_total"] else 0
            print(f"({s}) {name:<48} {m['rps']:>10,.0f} {ms(m['p50_us']):>8} {ms(m['p99_us']):>8} "
                  f"{m['nginx_cpu']:>9.0f}% {per_req:>10.3f}")
    print()
    for label, a, b, target in TARGETS:
        if a in med and b in med:
            ratio = statistics.median(ra["rps"] / rb["rps"] for ra, rb in zip(
                sorted(by[a], key=lambda r: r["round"]), sorted(by[b], key=lambda r: r["round"])))
            print(f"{label:<52} {ratio:6.2f}  (target >= {target})  {'met' if ratio >= target else 'MISSED'}")
    if 1 in med and 5 in med:
        print(f"{'  ceiling of (2)/(5) here: (1)/(5)':<52} {med[1]['rps'] / med[5]['rps']:6.2f}")
    print(f"{'(6) whoami calls per burst, slowed / fast':<52} {[int(b['whoami']) for b in slow]} / "
          f"{[int(b['whoami']) for b in fast]}  (target == 1)")
    print(f"{'module whoami calls on reused connections':<52} {reuse:6.2f}% (target >= {REUSE_TARGET:g}%)")
    print(f"{'idle worker RSS after startup / rounds / bursts':<52} {mb(rs['rss'])} / "
          f"{mb(rss_fields(E['R_RSS_ROUNDS'])['rss'])} / {mb(re_['rss'])} (target <= 25 MB)")
    print(f"{'non-2xx answers / wrk socket errors':<52} {total_non2xx} / {total_sock}")
    print()
    if missed:
        print("MISSED: " + "; ".join(missed))
    else:
        print("all targets met")


main()
