"""Turns the measurements of scripts/bench into BENCHMARKS.md and a summary on stdout.

Inputs come from R_* environment variables set by scripts/bench (see the end of that script).
The report is a list of sections (SECTIONS at the end): each is a function that gets the
measurements (a Run) and a function that appends one line of Markdown; add a section by
writing such a function and listing it there.
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
# The variants of the protected location, in report order; the targets are judged on PRIMARY.
VARIANTS = {
    "content": "the location answers itself (`empty_gif;`): isolates the cost of the check",
    "proxied": "`proxy_pass` to a keep-alive upstream in the same nginx worker",
}
PRIMARY = "content"
DILUTED = "for information: an upstream in the same worker dilutes every ratio"
RATIOS = [  # (label, numerator, denominator, minimum)
    ("(2)/(1) module hit vs plain nginx", 2, 1, 0.95),
    ("(2)/(5) module hit vs auth_request + proxy_cache", 2, 5, 1.5),
    ("(3)/(4) module miss vs auth_request uncached", 3, 4, 1.0),
]
RSS_TARGET_KB = 25 * 1024
REUSE_TARGET = 99.0
WRK_BUSY = 90  # % of each core wrk can use: above this, wrk may be what limits a run


def sh(*cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()
    except Exception as e:  # noqa: BLE001 - a missing tool only blanks one line of the report
        return f"({cmd[0]}: {e})"


def read_tsv(path, text=()):
    """Rows of a TSV with a header line; every column a float except those named in text."""
    with open(path) as f:
        return [{k: (v if k in text else float(v)) for k, v in row.items()}
                for row in csv.DictReader(f, delimiter="\t")]


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


class Run:
    """The measurements of one scripts/bench run.

    by[(variant, scenario)]: the rows of results.tsv (one per round); med[(variant, scenario)]:
    medians over rounds and totals; bursts: the rows of bursts.tsv; missed: missed targets, filled
    in by the sections that judge them.
    """

    def __init__(self):
        self.rows = read_tsv(E["R_RESULTS"], text=("variant",))
        for r in self.rows:  # older result files had no per-CPU column
            r.setdefault("other_nginx_cpu", r["other_cpu"])
        with open(E["R_BURSTS"]) as f:
            self.bursts = list(csv.DictReader(f, delimiter="\t"))
        self.variants = [v for v in VARIANTS if any(r["variant"] == v for r in self.rows)]
        self.by = {(v, s): sorted((r for r in self.rows if r["variant"] == v and int(r["scenario"]) == s),
                                  key=lambda r: r["round"])
                   for v in self.variants for s in NAMES}
        self.med = {}
        for key, rs in self.by.items():
            if not rs:
                continue
            m = {k: statistics.median(r[k] for r in rs) for k in rs[0] if k not in ("round", "variant", "scenario")}
            m["rounds"] = [r["rps"] for r in rs]
            m["non2xx_total"] = sum(r["non2xx"] for r in rs)
            m["n499_total"] = sum(r["n499"] for r in rs)
            m["other_max"] = max(r["other_cpu"] for r in rs)
            m["other_nginx_max"] = max(r["other_nginx_cpu"] for r in rs)
            m["status_errors_total"] = sum(r["status_errors"] for r in rs)
            m["socket_errors_total"] = sum(r["socket_errors"] for r in rs)
            m["whoami_total"] = sum(r["whoami"] for r in rs)
            m["requests_total"] = sum(r["requests"] for r in rs)
            m["reused_total"] = sum(r["whoami_reused"] for r in rs)
            self.med[key] = m
        self.missed = []
        self.quick = E["R_QUICK"] == "1"
        self.rss_start = rss_fields(E["R_RSS_START"])
        self.rss_rounds = rss_fields(E["R_RSS_ROUNDS"])
        self.rss_end = rss_fields(E["R_RSS_END"])
        self.rss_ref_start = rss_fields(E["R_RSS_REF_START"])
        self.rss_ref_end = rss_fields(E["R_RSS_REF_END"])
        calls = int(E["R_MODULE_CALLS"]) + int(E["R_BURST_CALLS"])
        reused = int(E["R_MODULE_REUSED"]) + int(E["R_BURST_REUSED"])
        self.reuse = (100 * reused / calls if calls else 0, reused, calls)

    def ratio(self, v, a, b):
        """Median over rounds of the ratio of requests/s within each round, and the per-round
        ratios; None when a scenario is missing. Paired by round (the two runs were a minute
        apart at most): steadier than a ratio of medians when the machine's speed drifts."""
        ra = {r["round"]: r["rps"] for r in self.by.get((v, a), [])}
        rb = {r["round"]: r["rps"] for r in self.by.get((v, b), [])}
        per_round = [ra[k] / rb[k] for k in sorted(ra) if k in rb and rb[k]]
        if not per_round:
            return None
        return statistics.median(per_round), per_round

    def cpu_ratio(self, v, a, b):
        """Like ratio, but of requests per second of nginx worker CPU: what each scenario
        would reach with nginx the only limit, whatever wrk could keep up with."""
        def capacity(r):
            return r["rps"] / (r["nginx_cpu"] / 100) if r["nginx_cpu"] else 0
        ca = {r["round"]: capacity(r) for r in self.by.get((v, a), [])}
        cb = {r["round"]: capacity(r) for r in self.by.get((v, b), [])}
        per_round = [ca[k] / cb[k] for k in sorted(ca) if k in cb and cb[k]]
        if not per_round:
            return None
        return statistics.median(per_round), per_round

    def per_request(self, key):
        m = self.med[key]
        return m["whoami_total"] / m["requests_total"] if m["requests_total"] else 0

    def burst_calls(self, speed):
        return [int(b["whoami"]) for b in self.bursts if b["speed"] == speed]


def ratio_text(run, v, a, b, by_cpu=False):
    res = run.cpu_ratio(v, a, b) if by_cpu else run.ratio(v, a, b)
    if res is None:
        return "—"
    ratio, per_round = res
    rng = f" (rounds {min(per_round):.2f}–{max(per_round):.2f})" if len(per_round) > 1 else ""
    return f"{ratio:.2f}{rng}"


# ---- sections -------------------------------------------------------------------------------

def section_header(run, w):
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

    w("# Benchmarks")
    w("")
    w(f"Generated by `scripts/bench` on {now}; the file is overwritten by every run."
      + (" **This is a `--quick` smoke run (1 round x 2 s): not for comparisons.**" if run.quick else ""))
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


def section_method(run, w):
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
    w("- Two **variants** of the protected location, each a set of five `server` blocks (one per "
      "scenario) of the same nginx under test, on ports of their own, measured in the same run:")
    w("  - **content** (primary: the targets are judged on it): the location answers itself with "
      "`empty_gif;` (a 43-byte GIF from memory). It is a content handler, so the access phase, "
      "where `auth_request` and the module run, comes first (`return` would not do: it answers in "
      "the rewrite phase, before either check runs). A request then costs nginx little besides "
      "the check, which isolates the check's cost.")
    w("  - **proxied** (for information): the location does `proxy_pass` to a `server` block of the "
      "nginx under test answering `return 200 \"ok\\n\"`, through an `upstream` with `keepalive 64`, "
      "`proxy_http_version 1.1`, `Connection \"\"`. Each request thus also costs the worker a "
      "proxied request in the same worker, which dilutes the difference between checks.")
    w(f"- Load: `wrk -t{E['R_THREADS']} -c{E['R_CONNECTIONS']} -d{E['R_DURATION']}s --latency` for every "
      f"(variant, scenario), {E['R_ROUNDS']} round(s); in each round all ten (variant, scenario) runs "
      "run once: the eight runs of (1), (2), (3) and (5) in a new order every round (a seeded "
      "shuffle, so no run always follows the same one), then the two runs of (4), then a wait "
      "until the sockets (4) leaves in TIME-WAIT are gone (every loopback packet is looked up "
      "among them, so they would slow whatever ran next; "
      f"{E.get('R_DRAINED', '?')} s of waiting in all); a 1 s warm-up of each of the ten comes first. Right before each "
      "(2) and (5) run, outside the measured window, one request with the hit credential makes "
      "sure the run starts with it fresh in the cache it uses (both caches keep an entry 60 s, a "
      "round of ten runs takes longer, and the new credentials of (3) can push it out of the "
      "module's cache): (2) and (5) measure hits only. Tables show medians over rounds; p50/p99 "
      "are wrk's latency percentiles.")
    w(f"- Credentials: every request sends a browser-like `Cookie` header of "
      f"{E['R_COOKIE_LEN']} characters: `{E['R_COOKIE_SHAPE']}` (an analytics cookie, Kratos' CSRF "
      f"cookie, and the session cookie, whose real value is an encrypted securecookie blob; the "
      f"other two cookies take {E['R_COOKIE_OTHERS_LEN']} characters). All random, new for every "
      "run of the script. (1), (2) and (5) send the same header, with one session value for the "
      "whole run; (3) and (4) a session value never sent before on every request (the same "
      f"{E['R_SESSION_LEN']} characters: the start of a random base, a tag of the wrk run, the wrk "
      "thread and a request counter; `scripts/bench.d/distinct.lua`). The module's cache keeps "
      "its defaults (10000 sessions, 60 s), so (3) also pays for inserting and evicting. (5) "
      "caches whoami answers with `proxy_cache` keyed on `$cookie_ory_kratos_session` for 60 s "
      "(one cache for both variants).")
    w("- non-2xx: nginx logs every non-2xx answer (`access_log … if=$non2xx`, all scenarios alike); "
      "wrk's own count of status ≥ 400 and socket errors are checked too.")
    w("- CPU columns: CPU time of the nginx worker (all its threads), of the double's worker and of "
      "wrk, over the run's wall time (100% = one core).")
    w("")


def results_table(run, v, w):
    w("| scenario | requests/s | p50 ms | p99 ms | req/s per round | nginx worker CPU (nginx thread + module thread) | nginx CPU µs / request | double CPU | wrk CPU | others' CPU: all / on the nginx CPU (max) | whoami calls / request | non-2xx (+ 499 at wrk's stop) |")
    w("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for s, name in NAMES.items():
        if (v, s) not in run.med:
            continue
        m = run.med[(v, s)]
        w(f"| ({s}) {name} | {m['rps']:,.0f} | {ms(m['p50_us'])} | {ms(m['p99_us'])} | "
          f"{', '.join(f'{x:,.0f}' for x in m['rounds'])} | {m['nginx_cpu']:.0f}% ({m['nginx_main_cpu']:.0f} + {m['nginx_threads_cpu']:.0f}) | "
          f"{m['nginx_cpu'] / 100 * 1e6 / m['rps']:.2f} | "
          f"{m['double_cpu']:.0f}% | {m['wrk_cpu']:.0f}% | {m['other_max']:.0f}% / {m['other_nginx_max']:.0f}% | "
          f"{run.per_request((v, s)):.3f} | {int(m['non2xx_total'])} (+ {int(m['n499_total'])}) |")
    w("")


def section_results(run, w):
    for v in run.variants:
        if v == PRIMARY:
            w(f"## Results: {v} variant (primary)")
            w("")
            w(f"The protected location: {VARIANTS[v]}. The targets are judged on this table.")
        else:
            w(f"## Results: {v} variant ({DILUTED})")
            w("")
            w(f"The protected location: {VARIANTS[v]}. Every scenario, (1) included, pays for the "
              "proxied request, so the differences between the checks shrink; shown for information.")
        w("")
        results_table(run, v, w)
    w("CPU: percent of one core over the run (medians over rounds). *Others* is CPU time used by "
      "processes other than the two nginx workers and wrk (e.g. another build on the machine; a "
      "little loopback softirq time lands there too), on all CPUs and on the CPU the nginx under "
      f"test is pinned to. Before each run scripts/bench waits up to {E['R_QUIET_WAIT']} s for the "
      f"CPUs to go idle, and runs again (up to {E['R_RETRIES']} times, keeping the least "
      f"disturbed attempt) when others used more than {E.get('R_DISTURBED', '?')}% of a CPU during the run "
      f"({int(sum(r['attempts'] for r in run.rows)) - len(run.rows)} repeated runs this time)"
      + (f"; nginx, the double and wrk ran at niceness {E['R_NICE']}" if E.get("R_NICE", "0") != "0" else "")
      + ". 499: requests still waiting when wrk stopped and closed its "
      "connections (not errors of the check).")
    wrk_max = WRK_BUSY * int(E.get("R_LOAD_NCPU", 1))
    busy_wrk = [f"{v} ({s})" for (v, s), m in run.med.items() if m["wrk_cpu"] >= wrk_max]
    if busy_wrk:
        w("")
        w(f"**The load generator was near its limit** in {', '.join(busy_wrk)}: wrk used "
          f"≥ {wrk_max}% of a core (it has {E['R_PINNING_LOAD']}). There the requests/s may be "
          "capped by wrk as much as by nginx (the nginx worker CPU column says whether nginx was "
          "saturated too), which pulls ratios between such runs towards 1.")
    others = max((m["other_max"] for m in run.med.values()), default=0)
    if others > float(E.get("R_DISTURBED", 15)):
        w("")
        w(f"**Warning: other processes used up to {others:.0f}% of a CPU during some runs (the "
          "machine is shared); those numbers are disturbed, compare with care.**")
    w("")


def section_targets(run, w):
    w("## Targets")
    w("")
    w(f"Judged on the **{PRIMARY}** variant. Ratios of requests/s: the median over rounds of the "
      "ratio within each round.")
    w("")
    w("| check | value | target | |")
    w("|---|---:|---:|---|")
    for label, a, b, target in RATIOS:
        res = run.ratio(PRIMARY, a, b)
        if res is None:
            continue
        ok = res[0] >= target
        if not ok:
            run.missed.append(f"{label} ({PRIMARY}): {res[0]:.2f} < {target}")
        w(f"| {label} ({PRIMARY}) | {ratio_text(run, PRIMARY, a, b)} | ≥ {target} | {verdict(ok)} |")
    for label, speed in ((f"(6) whoami calls for a burst of {E['R_BURST']} first requests (answer slowed)", "slow"),
                         ("(6') the same against the fast double", "fast")):
        calls = run.burst_calls(speed)
        ok = bool(calls) and all(c == 1 for c in calls)
        if not ok:
            run.missed.append(f"{label}: {calls}")
        w(f"| {label} | {', '.join(map(str, calls))} | == 1 | {verdict(ok)} |")
    reuse, reused, calls = run.reuse
    ok = reuse >= REUSE_TARGET
    if not ok:
        run.missed.append(f"keep-alive reuse {reuse:.2f}% < {REUSE_TARGET}%")
    w(f"| module whoami calls on a reused keep-alive connection (both variants and the bursts) | "
      f"{reuse:.2f}% ({reused:,} of {calls:,}; {E['R_MODULE_CONNS']} connections) | ≥ {REUSE_TARGET:g}% | {verdict(ok)} |")
    hot = hot_path()
    if hot:
        for label, key in (("a cache hit", "hit"), ("a cache hit with two variables used", "hit+variables")):
            extra = hot["extra"][key]
            ok = not any(f.startswith(key + ":") for f in hot["failures"])
            if not ok:
                run.missed.append(f"hot path of {label}: " + "; ".join(
                    f for f in hot["failures"] if f.startswith(key + ":")))
            w(f"| hot path: what {label} adds to plain nginx, per request (counted under callgrind, "
              f"see [Hot path](#hot-path)) | {extra['heap calls']:+.3f} heap calls, "
              f"{extra['system calls']:+.3f} system calls, {extra['lock calls']:+.3f} lock calls, "
              f"{extra['instructions on other threads']:+.1f} instructions "
              f"on other threads | 0 | {verdict(ok)} |")
    per_entry = bytes_per_entry()
    if per_entry:
        total, without_json, json_bytes = per_entry
        ok = without_json <= 512
        if not ok:
            run.missed.append(f"bytes per cached session: {without_json}")
        w(f"| bytes per cached session, without the trait and metadata JSON kept for variables "
          f"(`cargo test bytes_per_entry`: counting allocator, the contract's example session) | "
          f"{without_json} (with its {json_bytes} bytes of JSON: {total}) | ≤ 512 | {verdict(ok)} |")
    ok = run.rss_start["rss"] <= RSS_TARGET_KB
    if not ok:
        run.missed.append(f"idle worker RSS after startup: {mb(run.rss_start['rss'])}")
    w(f"| idle worker RSS, module loaded, after startup | {mb(run.rss_start['rss'])} | ≤ 25 MB | {verdict(ok)} |")
    w("")
    others = [v for v in run.variants if v != PRIMARY]
    if others:
        w(f"The same ratios for the other variant ({DILUTED}; no target applies):")
        w("")
        w("| ratio | " + " | ".join(f"{v} (information)" for v in others) + f" | {PRIMARY} (judged above) |")
        w("|---|" + "---:|" * (len(others) + 1))
        for label, a, b, _ in RATIOS:
            w(f"| {label} | " + " | ".join(ratio_text(run, v, a, b) for v in others)
              + f" | {ratio_text(run, PRIMARY, a, b)} |")
        w("")
    w("By nginx CPU time per request instead of requests/s (requests per second of nginx worker "
      "CPU, so a run that wrk could not drive to nginx's limit counts as much as one that it "
      "could; information):")
    w("")
    w("| ratio | " + " | ".join(run.variants) + " |")
    w("|---|" + "---:|" * len(run.variants))
    for label, a, b, _ in RATIOS:
        w(f"| {label} | " + " | ".join(ratio_text(run, v, a, b, by_cpu=True) for v in run.variants) + " |")
    w("")
    for v in run.variants:
        if (v, 1) in run.med and (v, 5) in run.med:
            w(f"- Ceiling of (2)/(5), {v} variant: (2) cannot beat (1) (it is (1) plus a check), so "
              f"(2)/(5) ≤ (1)/(5) = {run.med[(v, 1)]['rps'] / run.med[(v, 5)]['rps']:.2f}.")
    w("")
    if run.missed:
        w("**MISSED:** " + "; ".join(run.missed))
        w("")


def section_memory(run, w):
    fmt = lambda r: f"{mb(r['rss'])} (anon {mb(r['anon'])}, file {mb(r['file'])}, {r['threads']} thread{'s' if r['threads'] > 1 else ''})"
    w("## Memory")
    w("")
    w("Worker memory, VmRSS from `/proc/<worker>/status` while idle. The target (≤ 25 MB, in the "
      "Targets table) is the idle worker after startup; the later rows are for information.")
    w("")
    w("| | nginx under test (module loaded, `ory_session on`) | reference: same binary and settings, no module |")
    w("|---|---|---|")
    w(f"| after startup (target ≤ 25 MB) | {fmt(run.rss_start)} | {fmt(run.rss_ref_start)} |")
    w(f"| after the wrk rounds (information) | {fmt(run.rss_rounds)} | — |")
    w(f"| after the bursts, {E['R_BURST']} connections at once (information) | {fmt(run.rss_end)} | {fmt(run.rss_ref_end)} |")
    w("")
    grow = lambda a, b: f"{(b['rss'] - a['rss']) / 1024:+.1f} MB"
    w("After the rounds the module's cache is full (10000 sessions from (3), each keyed on a "
      f"{E['R_SESSION_LEN']}-character value). The bursts ({E['R_BURST']} connections at once, a "
      "request each) grow nginx's own memory too: connection and request pools that glibc keeps "
      f"(nginx under test {grow(run.rss_rounds, run.rss_end)} over the bursts). The reference nginx "
      "mirrors the content variant (`empty_gif;`, no upstream) and gets one such burst after the "
      f"others ({grow(run.rss_ref_start, run.rss_ref_end)}); it answers at once, while the requests "
      "of burst (6) all wait about a second for the one whoami call, so more of them are alive at "
      "the same time: the reference's growth is a lower bound for nginx's own share.")
    w("")


def section_details(run, w):
    w("## Details")
    w("")
    for v in run.variants:
        if (v, 4) not in run.med:
            continue
        m = run.med[(v, 4)]
        share = 100 * m["reused_total"] / m["whoami_total"] if m["whoami_total"] else 0
        w(f"- auth_request, uncached (4), {v} variant: {share:.1f}% of its whoami calls came on a reused "
          f"connection despite `keepalive 64`: an `auth_request` subrequest only needs the reply's "
          f"headers, so nginx closes the upstream connection instead of reading the body "
          f"({int(m['time_wait']):,} sockets in TIME-WAIT on the machine right after a run of (4)).")
    w(f"- Bursts (content variant): h2load `--h1 -n {E['R_BURST']} -c {E['R_BURST']}`, all with one "
      "session value never sent before (the same Cookie header shape and length as the runs). (6): "
      f"the double sends the whoami answer over about {E['R_SLOW_DELAY']} s (`limit_rate`), so every "
      "request arrives while the one call is open; (6'): the fast double.")
    w("")
    w("| burst | round | whoami calls | requests logged | 2xx | non-2xx | MISS | HIT | request time min–max s |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for b in run.bursts:
        w(f"| {'(6) slowed' if b['speed'] == 'slow' else chr(40) + '6' + chr(39) + ') fast'} | {b['round']} | "
          f"{b['whoami']} | {b['requests']} | {b['ok_2xx']} | {b['non_2xx']} | {b['miss']} | {b['hit']} | "
          f"{b['min_request_time']}–{b['max_request_time']} |")
    w("")


def section_logs(run, w):
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
    run.total_non2xx = sum(non2xx.values())
    total_wrk = sum(int(m["status_errors_total"]) for m in run.med.values())
    run.total_sock = sum(int(m["socket_errors_total"]) for m in run.med.values())
    w(f"- Non-2xx answers logged by nginx: {run.total_non2xx}; wrk status errors: {total_wrk}; "
      f"wrk socket errors: {run.total_sock}.")
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


def section_configs(run, w):
    w("## Configurations")
    w("")
    w("Generated by `scripts/bench` from `scripts/bench.d/main.conf.in` (nginx under test; its "
      "scenario `server` blocks from `scripts/bench.d/scenarios.conf.in`, once per variant), "
      "`scripts/bench.d/double.conf.in` (Kratos double; the canned body is `scripts/bench.d/whoami.json`) "
      "and `scripts/bench.d/idle.conf.in` (RSS reference, no module); wrk scripts: "
      "`scripts/bench.d/fixed.lua`, `scripts/bench.d/distinct.lua`, `scripts/bench.d/report.lua`. "
      f"Ports of this run: {E['R_PORTS']}. As run:")
    w("")
    for label, path in (("nginx under test", E["R_CONF_MAIN"]),
                        ("Kratos double (whoami body elided)", E["R_CONF_DOUBLE"]),
                        ("reference nginx for the memory measurement", E["R_CONF_IDLE"])):
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


def hot_path():
    """scripts/hotpath's results, with what the hit scenarios add over plain nginx."""
    path = E.get("R_HOTPATH_JSON")
    if not path or not os.path.exists(path):
        return None
    import json
    with open(path) as f:
        data = json.load(f)
    return {"extra": data["extra_over_plain"], "failures": data["failures"],
            "requests": data["requests"], "scenarios": data["scenarios"]}


def bytes_per_entry():
    m = re.search(r"bytes per cached session: (\d+) \((\d+) without the (\d+) bytes",
                  E.get("R_BYTES_PER_ENTRY", ""))
    return tuple(int(x) for x in m.groups()) if m else None


def section_hot_path(run, w):
    hot = hot_path()
    if not hot:
        return
    w("## Hot path")
    w("")
    w(f"`scripts/hotpath`, run by this script: the same nginx binary and module under valgrind's "
      f"callgrind, {hot['requests']:,} requests per scenario on one keep-alive connection, one "
      "at a time, after a warm-up; every location serves `empty_gif` itself and every request "
      f"carries the same {E.get('R_COOKIE_LEN', '?')}-character Cookie header as above. These are "
      "counts, not timings: they do not depend on the machine's load.")
    w("")
    with open(E["R_HOTPATH_MD"]) as f:
        for line in f.read().rstrip("\n").split("\n"):
            w(line)
    w("")
    sc = hot["scenarios"]
    hit = hot["extra"]["hit"]
    w(f"- A cache hit costs nginx {hit['instructions']:,.0f} instructions more than no check "
      f"({hit['instructions'] / sc['plain']['instructions']:+.1%} of plain nginx's user-space "
      "work, which is itself the smaller part of a request's CPU time: the kernel's share of "
      "loopback TCP is larger). What the module does on a hit: find the credential among the "
      "request headers (the session cookie through memchr's memmem), the cache key: XXH3-128 "
      "over it under the worker's random secret (it covers every byte of the 256-byte value), "
      "an LRU lookup, "
      "the request context in the request pool, three relaxed atomic counters in shared memory.")
    call = sc.get("uncached")
    if call:
        w(f"- A whoami call (the uncached scenario) costs {call['instructions']:,.0f} instructions "
          f"on the nginx thread and {call['other_threads_instructions']:,.0f} on the module's "
          f"client thread (reqwest, hyper, JSON decoding), with "
          f"{sum(call['heap_calls'].values()):.0f} heap calls: paid once per session and cache "
          "lifetime, not per request.")
    w("")


SECTIONS = [section_header, section_method, section_results, section_targets, section_memory,
            section_hot_path, section_details, section_logs, section_configs]


def print_summary(run):
    for v in run.variants:
        print()
        title = f"{v} variant" + (" (primary: targets judged here)" if v == PRIMARY else f" ({DILUTED})")
        print(title)
        print(f"{'scenario':<52} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'nginx CPU':>10} {'whoami/req':>10}")
        for s, name in NAMES.items():
            if (v, s) in run.med:
                m = run.med[(v, s)]
                print(f"({s}) {name:<48} {m['rps']:>10,.0f} {ms(m['p50_us']):>8} {ms(m['p99_us']):>8} "
                      f"{m['nginx_cpu']:>9.0f}% {run.per_request((v, s)):>10.3f}")
        for label, a, b, target in RATIOS:
            res = run.ratio(v, a, b)
            if res is None:
                continue
            judged = f"(target >= {target})  {'met' if res[0] >= target else 'MISSED'}" if v == PRIMARY else "(information)"
            print(f"{label:<52} {res[0]:6.2f}  {judged}")
        if (v, 1) in run.med and (v, 5) in run.med:
            print(f"{'  ceiling of (2)/(5) here: (1)/(5)':<52} {run.med[(v, 1)]['rps'] / run.med[(v, 5)]['rps']:6.2f}")
    print()
    print(f"{'(6) whoami calls per burst, slowed / fast':<52} {run.burst_calls('slow')} / "
          f"{run.burst_calls('fast')}  (target == 1)")
    print(f"{'module whoami calls on reused connections':<52} {run.reuse[0]:6.2f}% (target >= {REUSE_TARGET:g}%)")
    print(f"{'idle worker RSS after startup':<52} {mb(run.rss_start['rss'])} (target <= 25 MB)")
    print(f"{'idle worker RSS after rounds / bursts':<52} {mb(run.rss_rounds['rss'])} / "
          f"{mb(run.rss_end['rss'])} (information)")
    hot = hot_path()
    if hot:
        e = hot["extra"]["hit"]
        print(f"{'hot path, cache hit vs plain (per request)':<52} {e['instructions']:+,.0f} instructions, "
              f"{e['heap calls']:+.3f} heap / {e['system calls']:+.3f} system / {e['lock calls']:+.3f} lock calls (target 0)")
    per_entry = bytes_per_entry()
    if per_entry:
        print(f"{'bytes per cached session without JSON':<52} {per_entry[1]} (target <= 512)")
    print(f"{'non-2xx answers / wrk socket errors':<52} {run.total_non2xx} / {run.total_sock}")
    wrk_max = WRK_BUSY * int(E.get("R_LOAD_NCPU", 1))
    busy_wrk = [f"{v} ({s})" for (v, s), m in run.med.items() if m["wrk_cpu"] >= wrk_max]
    if busy_wrk:
        print(f"{'wrk near its CPU limit (>= ' + str(wrk_max) + '%) in':<52} {', '.join(busy_wrk)}")
    print()
    if run.missed:
        print("MISSED: " + "; ".join(run.missed))
    else:
        print("all targets met")


def main():
    run = Run()
    out = []
    for section in SECTIONS:
        section(run, out.append)
    os.makedirs(os.path.dirname(os.path.abspath(E["R_OUTPUT"])), exist_ok=True)
    with open(E["R_OUTPUT"], "w") as f:
        f.write("\n".join(out) + "\n")
    print_summary(run)


main()
