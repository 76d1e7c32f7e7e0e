"""Turns the measurements of scripts/bench into BENCHMARKS.md and a summary on stdout.

Inputs come from R_* environment variables set by scripts/bench (see the end of that script).
The report is a list of sections (SECTIONS at the end): each is a function that gets the
measurements (a Run) and a function that appends one line of Markdown.
"""
import csv
import datetime
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess

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


def sh(*cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip()
    except Exception as e:  # noqa: BLE001 - a missing tool only blanks one line of the report
        return f"({cmd[0]}: {e})"


def ms(us):
    return f"{us / 1000:.2f}"


def verdict(ok):
    return "met" if ok else "**MISSED**"


def rss_fields(s):
    r, a, f, t = (int(x) for x in s.split())
    return {"rss": r, "anon": a, "file": f, "threads": t}


def mb(kb):
    return f"{kb / 1024:.1f} MB"


def log_levels(path):
    """How many error.log lines of each level."""
    levels = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = re.match(r"^\S+ \S+ \[(\w+)\]", line)
                level = m.group(1) if m else "?"
                levels[level] = levels.get(level, 0) + 1
    except FileNotFoundError:
        pass
    return levels


class Run:
    """The measurements of one scripts/bench run.

    by[(variant, scenario)]: the rows of results.tsv (one per round); med[(variant, scenario)]:
    medians over rounds and totals; bursts: the rows of bursts.tsv; missed: missed targets, filled
    in by the sections that judge them.
    """

    def __init__(self):
        with open(E["R_RESULTS"]) as f:
            self.rows = [{k: (v if k == "variant" else float(v)) for k, v in row.items()}
                         for row in csv.DictReader(f, delimiter="\t")]
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
            for k in ("non2xx", "n499", "status_errors", "socket_errors", "whoami", "requests", "whoami_reused"):
                m[k + "_total"] = sum(r[k] for r in rs)
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
        """The median of the per-round ratios of requests/s, and those ratios; None when a
        scenario is missing. Within a round the two runs were at most a minute apart, so a
        ratio per round is steadier than a ratio of medians when the machine's speed drifts."""
        ra = {r["round"]: r["rps"] for r in self.by.get((v, a), [])}
        rb = {r["round"]: r["rps"] for r in self.by.get((v, b), [])}
        per_round = [ra[k] / rb[k] for k in sorted(ra) if k in rb and rb[k]]
        if not per_round:
            return None
        return statistics.median(per_round), per_round

    def per_request(self, key):
        m = self.med[key]
        return m["whoami_total"] / m["requests_total"] if m["requests_total"] else 0

    def burst_calls(self, speed):
        return [int(b["whoami"]) for b in self.bursts if b["speed"] == speed]


def ratio_text(run, v, a, b):
    res = run.ratio(v, a, b)
    if res is None:
        return "—"
    ratio, per_round = res
    spread = f" (rounds {min(per_round):.2f}–{max(per_round):.2f})" if len(per_round) > 1 else ""
    return f"{ratio:.2f}{spread}"


def hot_path():
    """scripts/hotpath's results, with what the hit scenarios add over plain nginx."""
    path = E.get("R_HOTPATH_JSON")
    if not path or not os.path.exists(path):
        return None
    with open(path) as f:
        data = json.load(f)
    return {"extra": data["extra_over_plain"], "failures": data["failures"],
            "requests": data["requests"], "scenarios": data["scenarios"]}


def bytes_per_entry():
    m = re.search(r"bytes per cached session: (\d+) \((\d+) without the (\d+) bytes",
                  E.get("R_BYTES_PER_ENTRY", ""))
    return tuple(int(x) for x in m.groups()) if m else None


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
    with open(E["R_MODULE"], "rb") as f:
        so_sha = hashlib.sha256(f.read()).hexdigest()[:16]
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
    w("")
    w("The nginx binary is built `--with-debug` (the tests need `error_log ... debug`), which makes "
      "every request a little slower than with a release nginx. All scenarios run the same "
      "binary: compare ratios, and absolute numbers only with other runs of this script.")
    w("")


def section_method(run, w):
    w("## Method")
    w("")
    w(f"- Loopback. The nginx under test has one worker (`worker_connections {E['R_WORKER_CONNECTIONS']}`); "
      "the Kratos double is a second nginx answering whoami with a canned session "
      "(`scripts/bench.d/whoami.json`) and logging one line per call, which counts calls and "
      f"connection reuse. CPU pinning: {E['R_PINNING']}.")
    w("- Two variants of the protected location: **content** (`empty_gif;`, which isolates the "
      "cost of the check; the targets are judged on it) and **proxied** (`proxy_pass` to a "
      "keep-alive upstream in the same worker; for information).")
    w(f"- Every request sends a browser-like {E['R_COOKIE_LEN']}-character `Cookie` header: "
      f"`{E['R_COOKIE_SHAPE']}`. (1), (2), (5): one session value for the whole run; (3), (4): a "
      "value never sent before on every request. (5) caches whoami answers with `proxy_cache` keyed "
      "on the session cookie.")
    w(f"- `wrk -t{E['R_THREADS']} -c{E['R_CONNECTIONS']} -d{E['R_DURATION']}s`, {E['R_ROUNDS']} round(s) "
      "after a warm-up: each round runs all ten (variant, scenario) runs once, in a fixed order that "
      "every other round reverses. Tables show medians over rounds; ratios are the median of the "
      "per-round ratios, with their spread (min–max).")
    w("")


def results_table(run, v, w):
    w("| scenario | requests/s | p50 ms | p99 ms | req/s per round | nginx worker CPU (nginx thread + module thread) | nginx CPU µs / request | whoami calls / request | non-2xx (+ 499 at wrk's stop) |")
    w("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for s, name in NAMES.items():
        if (v, s) not in run.med:
            continue
        m = run.med[(v, s)]
        w(f"| ({s}) {name} | {m['rps']:,.0f} | {ms(m['p50_us'])} | {ms(m['p99_us'])} | "
          f"{', '.join(f'{x:,.0f}' for x in m['rounds'])} | {m['nginx_cpu']:.0f}% ({m['nginx_main_cpu']:.0f} + {m['nginx_threads_cpu']:.0f}) | "
          f"{m['nginx_cpu'] / 100 * 1e6 / m['rps']:.2f} | "
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
    w("CPU: percent of one core over the run, all threads of the nginx worker. 499: requests "
      "still waiting when wrk stopped and closed its connections (not errors of the check).")
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
    w("Worker memory, VmRSS from `/proc/<worker>/status` while idle. The target (≤ 25 MB) is the "
      "idle worker after startup; the later rows are for information. The reference is the same "
      "binary and settings without the module, given the same burst of connections.")
    w("")
    w("| | nginx under test (module loaded, `ory_session on`) | reference: same binary and settings, no module |")
    w("|---|---|---|")
    w(f"| after startup (target ≤ 25 MB) | {fmt(run.rss_start)} | {fmt(run.rss_ref_start)} |")
    w(f"| after the wrk rounds (information) | {fmt(run.rss_rounds)} | — |")
    w(f"| after the bursts, {E['R_BURST']} connections at once (information) | {fmt(run.rss_end)} | {fmt(run.rss_ref_end)} |")
    w("")
    w("After the rounds the module's cache is full (10000 sessions from (3), each keyed on a "
      f"{E['R_SESSION_LEN']}-character value); the bursts also grow nginx's own connection and "
      "request pools, which glibc keeps.")
    w("")


def section_hot_path(run, w):
    hot = hot_path()
    if not hot:
        return
    w("## Hot path")
    w("")
    w(f"`scripts/hotpath`: the same nginx and module under valgrind's callgrind, {hot['requests']:,} "
      "requests per scenario on one keep-alive connection, with the same Cookie header as above. "
      "Counts, not timings: the machine's load cannot change them.")
    w("")
    with open(E["R_HOTPATH_MD"]) as f:
        for line in f.read().rstrip("\n").split("\n"):
            w(line)
    w("")
    sc = hot["scenarios"]
    hit = hot["extra"]["hit"]
    w(f"- A cache hit costs nginx {hit['instructions']:,.0f} instructions more than no check "
      f"({hit['instructions'] / sc['plain']['instructions']:+.1%} of plain nginx's user-space "
      "work, itself the smaller part of a request's CPU time next to the kernel's loopback TCP).")
    call = sc.get("uncached")
    if call:
        w(f"- A whoami call (the uncached scenario) costs {call['instructions']:,.0f} instructions "
          f"on the nginx thread and {call['other_threads_instructions']:,.0f} on the module's "
          f"client thread, with {sum(call['heap_calls'].values()):.0f} heap calls: paid once per "
          "session and cache lifetime, not per request.")
    w("")


def section_details(run, w):
    w("## Details")
    w("")
    for v in run.variants:
        if (v, 4) not in run.med:
            continue
        m = run.med[(v, 4)]
        share = 100 * m["whoami_reused_total"] / m["whoami_total"] if m["whoami_total"] else 0
        w(f"- auth_request, uncached (4), {v} variant: {share:.1f}% of its whoami calls came on a reused "
          "connection despite `keepalive 64`: an `auth_request` subrequest only needs the reply's "
          "headers, so nginx closes the upstream connection instead of reading the body.")
    w(f"- Bursts (content variant): h2load `--h1 -n {E['R_BURST']} -c {E['R_BURST']}`, one session "
      f"value never sent before per burst. (6): the double sends the whoami answer over about "
      f"{E['R_SLOW_DELAY']} s, so every request arrives while the one call is open; (6'): the fast double.")
    for label, path in (("nginx under test", E["R_MAIN_ERROR_LOG"]), ("Kratos double", E["R_DOUBLE_ERROR_LOG"])):
        levels = log_levels(path)
        bad = sum(n for lv, n in levels.items() if lv in ("warn", "error", "crit", "alert", "emerg"))
        w(f"- error.log of the {label}: {sum(levels.values())} lines, warn or worse: {bad}.")
    if os.path.exists(E["R_UNEXPECTED_LOG"]) and os.path.getsize(E["R_UNEXPECTED_LOG"]):
        w("- The double got requests for unexpected paths (its logs/unexpected.log).")
    w("")
    w("| burst | round | whoami calls | requests logged | 2xx | non-2xx | MISS | HIT | request time min–max s |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for b in run.bursts:
        w(f"| {'(6) slowed' if b['speed'] == 'slow' else chr(40) + '6' + chr(39) + ') fast'} | {b['round']} | "
          f"{b['whoami']} | {b['requests']} | {b['ok_2xx']} | {b['non_2xx']} | {b['miss']} | {b['hit']} | "
          f"{b['min_request_time']}–{b['max_request_time']} |")
    w("")


SECTIONS = [section_header, section_method, section_results, section_targets, section_memory,
            section_hot_path, section_details]


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
            print(f"{label:<52} {ratio_text(run, v, a, b):<24} {judged}")
    print()
    print(f"{'(6) whoami calls per burst, slowed / fast':<52} {run.burst_calls('slow')} / "
          f"{run.burst_calls('fast')}  (target == 1)")
    print(f"{'module whoami calls on reused connections':<52} {run.reuse[0]:6.2f}% (target >= {REUSE_TARGET:g}%)")
    print(f"{'idle worker RSS after startup':<52} {mb(run.rss_start['rss'])} (target <= 25 MB)")
    hot = hot_path()
    if hot:
        e = hot["extra"]["hit"]
        print(f"{'hot path, cache hit vs plain (per request)':<52} {e['instructions']:+,.0f} instructions, "
              f"{e['heap calls']:+.3f} heap / {e['system calls']:+.3f} system / {e['lock calls']:+.3f} lock calls (target 0)")
    per_entry = bytes_per_entry()
    if per_entry:
        print(f"{'bytes per cached session without JSON':<52} {per_entry[1]} (target <= 512)")
    non2xx = sum(int(m["non2xx_total"]) for m in run.med.values())
    sock = sum(int(m["socket_errors_total"]) for m in run.med.values())
    print(f"{'non-2xx answers (not 499) / wrk socket errors':<52} {non2xx} / {sock}")
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
