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
    7: "plain nginx, the OAuth2 request (no check)",
    8: "module, JWT cache hit (one token)",
    9: "module, JWT verified every request (`ory_oauth2_cache_ttl 0`)",
    10: "module, introspection cache hit (one opaque token)",
    11: "module, introspection miss (new opaque token every request)",
    12: "auth_request to the introspection double, uncached",
    13: "module, session hit + permission hit",
    14: "module, session hit + permission uncached (`ory_permission_cache_ttl 0`)",
    15: "Oathkeeper's pattern: auth_request to a Keto decision, uncached",
}
SESSION = [1, 2, 3, 4, 5]
OAUTH2 = [7, 8, 9, 10, 11, 12]
PERMISSION = [1, 2, 13, 14, 15]  # (1) and (2) repeated from the session table, for comparison
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
# OAuth2 and permission (content variant only). By nginx CPU per request: (label, numerator,
# denominator, maximum of the ratio).
CPU_TARGETS = [
    ("(8)/(7) JWT cache hit vs plain nginx, nginx CPU per request", 8, 7, 1.05),
    ("(13)/(1) session + permission hit vs plain nginx, nginx CPU per request", 13, 1, 1.10),
]
RPS_TARGETS = [  # by requests/s: (label, numerator, denominator, minimum)
    ("(11)/(12) introspection miss vs auth_request to the same double, uncached", 11, 12, 1.5),
]
FIRST_SEEN_MARGIN_US = 10.0  # (9) - (7) - the signature check in nginx <= this
# For information: (label, numerator, denominator, "cpu" | "rps").
INFO_RATIOS = [
    ("(8)/(7) JWT cache hit vs plain nginx", 8, 7, "rps"),
    ("(10)/(7) introspection cache hit vs plain nginx (a shorter request than (7)'s)", 10, 7, "cpu"),
    ("(9)/(7) JWT verified every request vs plain nginx", 9, 7, "cpu"),
    ("(10)/(12) introspection cache hit vs auth_request uncached", 10, 12, "rps"),
    ("(13)/(1) session + permission hit vs plain nginx", 13, 1, "rps"),
    ("(13)/(2) session + permission hit vs session hit alone", 13, 2, "cpu"),
    ("(13)/(15) session + permission hit vs Oathkeeper's pattern", 13, 15, "rps"),
    ("(14)/(15) session hit + permission uncached vs Oathkeeper's pattern", 14, 15, "rps"),
]
# Paired runs (scripts/bench's "paired runs"): the two scenarios side by side in the nginx under
# test and its twin, then swapped. (label, a, b, "rps" | "cpu"); b/a is the ratio. The targets
# of these ratios (RATIOS, CPU_TARGETS) are judged on the paired runs when the run has them.
PAIRED = [
    ("(1)/(1) control: plain nginx against itself", 1, 1, "cpu"),
    ("(2)/(1) module hit vs plain nginx", 1, 2, "rps"),
    ("(8)/(7) JWT cache hit vs plain nginx, nginx CPU per request", 7, 8, "cpu"),
    ("(13)/(1) session + permission hit vs plain nginx, nginx CPU per request", 1, 13, "cpu"),
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
            for k in ("non2xx", "n499", "status_errors", "socket_errors", "calls", "requests", "calls_reused"):
                m[k + "_total"] = sum(r[k] for r in rs)
            self.med[key] = m
        self.paired_rows = []
        if os.path.exists(E.get("R_PAIRED", "")):
            with open(E["R_PAIRED"]) as f:
                self.paired_rows = [{k: (v if k == "pair" else float(v)) for k, v in row.items()}
                                    for row in csv.DictReader(f, delimiter="\t")]
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

    def per_round(self, v, a, b, of=lambda r: r["rps"], op=lambda x, y: x / y):
        """The median of op(of(a), of(b)) over rounds, and the per-round values; None when a
        scenario is missing. Within a round the two runs were at most a minute or two apart,
        so a ratio per round is steadier than a ratio of medians when the machine's speed
        drifts."""
        ra = {r["round"]: of(r) for r in self.by.get((v, a), [])}
        rb = {r["round"]: of(r) for r in self.by.get((v, b), [])}
        per_round = [op(ra[k], rb[k]) for k in sorted(ra) if k in rb and rb[k]]
        if not per_round:
            return None
        return statistics.median(per_round), per_round

    def ratio(self, v, a, b):
        """Of requests/s."""
        return self.per_round(v, a, b)

    def cpu_ratio(self, v, a, b):
        """Of nginx CPU per request."""
        return self.per_round(v, a, b, of=cpu_us)

    def cpu_diff(self, v, a, b):
        """nginx CPU µs per request of a, minus b's."""
        return self.per_round(v, a, b, of=cpu_us, op=lambda x, y: x - y)

    def paired(self, a, b, kind):
        """b/a from the paired runs: the median over rounds of each round's ratio, the
        geometric mean of its two halves (half 1: a in the nginx under test, b in the twin;
        half 2: swapped), so that a difference between the two instances cancels; with the
        per-round values, the halves' ratios and b's and a's medians (µs per request, or
        requests/s). None without paired runs of the pair."""
        key = "cpu_us" if kind == "cpu" else "rps"
        halves = {}
        for r in self.paired_rows:
            if r["pair"] != f"{a}/{b}":
                continue
            m, t = r["main_" + key], r["twin_" + key]
            if not (m and t):
                continue
            ratio = t / m if r["half"] == 1 else m / t
            b_value, a_value = (t, m) if r["half"] == 1 else (m, t)
            halves.setdefault(r["round"], {})[int(r["half"])] = (ratio, b_value, a_value)
        rounds = [h for _, h in sorted(halves.items()) if 1 in h and 2 in h]
        if not rounds:
            return None
        per_round = [(h[1][0] * h[2][0]) ** 0.5 for h in rounds]
        half_ratios = [h[n][0] for h in rounds for n in (1, 2)]
        b_med = statistics.median(h[n][1] for h in rounds for n in (1, 2))
        a_med = statistics.median(h[n][2] for h in rounds for n in (1, 2))
        return statistics.median(per_round), per_round, half_ratios, b_med, a_med

    def paired_errors(self):
        return int(sum(r["errors"] for r in self.paired_rows))

    def judged(self, a, b, kind):
        """The value a target of b/a (as RATIOS and CPU_TARGETS name it: numerator b) is
        judged on: the paired runs' (median, per-round values) when the run has them, else
        the sequential runs'; and where it comes from."""
        paired = any((x, y, k) == (a, b, kind) for _, x, y, k in PAIRED)
        res = self.paired(a, b, kind) if paired else None
        if res:
            return res[:2], "paired runs"
        return self.sequential(a, b, kind), "sequential runs"

    def sequential(self, a, b, kind):
        """b/a from the sequential runs (primary variant): CPU per request or requests/s."""
        return self.cpu_ratio(PRIMARY, b, a) if kind == "cpu" else self.ratio(PRIMARY, b, a)

    def per_request(self, key):
        m = self.med[key]
        return m["calls_total"] / m["requests_total"] if m["requests_total"] else 0

    def burst_calls(self, speed):
        return [int(b["whoami"]) for b in self.bursts if b["speed"] == speed]


def cpu_us(row):
    """nginx worker CPU µs per request, of one run."""
    return row["nginx_cpu"] / 100 * 1e6 / row["rps"] if row["rps"] else 0


def spread_text(res, fmt="{:.2f}"):
    if res is None:
        return "—"
    value, per_round = res
    spread = (f" (rounds {fmt.format(min(per_round))}–{fmt.format(max(per_round))})"
              if len(per_round) > 1 else "")
    return fmt.format(value) + spread


def ratio_text(run, v, a, b):
    return spread_text(run.ratio(v, a, b))


def verification(var="R_VERIFICATION"):
    """The crate's own verification cost: {token: (verify() µs, signature µs)}, the fastest of
    the test's runs for each (on a shared machine, a slower value is the machine's noise)."""
    out = {}
    try:
        with open(E[var]) as f:
            for line in f:
                m = re.match(r"^(\S+)\s+([\d.]+) µs\s+([\d.]+) µs\s*$", line)
                if m:
                    whole, sig = float(m.group(2)), float(m.group(3))
                    old = out.get(m.group(1), (whole, sig))
                    out[m.group(1)] = (min(old[0], whole), min(old[1], sig))
    except (KeyError, FileNotFoundError):
        pass
    return out


def log_reuse(name):
    """(calls, calls on a reused connection, connections) of one of the double's logs."""
    calls = reused = 0
    conns = set()
    try:
        with open(os.path.join(E["R_DOUBLE_LOGS"], name)) as f:
            for line in f:
                fields = line.split()
                calls += 1
                conns.add(fields[1])
                reused += int(fields[2]) > 1
    except (KeyError, FileNotFoundError):
        pass
    return calls, reused, len(conns)


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
      "the doubles are a second nginx with canned answers (Kratos' whoami: "
      "`scripts/bench.d/whoami.json`; Hydra and Keto: below) logging one line per call, which counts "
      f"calls and connection reuse. CPU pinning: {E['R_PINNING']}. CPU idle states: "
      f"{E.get('R_IDLE_STATES', 'not recorded')}.")
    w("- Two variants of the protected location: **content** (`empty_gif;`, which isolates the "
      "cost of the check; the targets are judged on it) and **proxied** (`proxy_pass` to a "
      "keep-alive upstream in the same worker; for information).")
    w(f"- Every request sends a browser-like {E['R_COOKIE_LEN']}-character `Cookie` header: "
      f"`{E['R_COOKIE_SHAPE']}`. (1), (2), (5): one session value for the whole run; (3), (4): a "
      "value never sent before on every request. (5) caches whoami answers with `proxy_cache` keyed "
      "on the session cookie.")
    w("- OAuth2 (7–12) and permission (13–15), content variant only. The double also plays Hydra "
      "(a JWKS of one RS256 RSA-4096 key, made with its kid by `scripts/bench.d/tokens.py` at each "
      "run and fetched by the worker when it starts; an introspection endpoint answering any POST "
      "with an active token, Hydra's members, `application/json`) and Keto (`/relation-tuples/check/openapi` "
      "answering `{\"allowed\":true}`; `/relation-tuples/check` answering 200 when allowed). "
      f"(7)–(9) send `Authorization: Bearer <JWT>` ({E['R_JWT_LEN']} characters, minted with PyJWT, "
      "Hydra's claims, valid for the run) and no Cookie; (7) is plain nginx (1) with that request. "
      "(8): the one JWT, a cache hit. (9): the same JWT on a location with `ory_oauth2_cache_ttl 0`, "
      "so every request verifies it in full (header, claims, RS256-4096 signature): the cost of a "
      "first-seen JWT, without having to mint a new RSA signature per request. "
      f"(10): one opaque `ory_at_` token ({E['R_OPAQUE_LEN']} characters), a cache hit; (11), (12): "
      "a new opaque token every request (`scripts/bench.d/distinct-token.lua`), introspected by the "
      "module (11), or by `auth_request` to a location that POSTs `token=...` to the same double's "
      "answer (12; `proxy_method POST`, `proxy_set_body`). (13)–(15) send the Cookie header of (1): "
      "(13) `ory_session on; ory_permission documents readme viewer;`, both cached; (14) the same "
      "with `ory_permission_cache_ttl 0`: no permission cache, but concurrent checks of the one "
      "tuple share a call, so its Keto calls per request are far below 1; (15) Oathkeeper's pattern, uncached: `auth_request` to a decision "
      "location that proxies to the Keto double's `/relation-tuples/check` with the cookie, one hop "
      "per request (a real Oathkeeper would also call whoami itself, which this leaves out: a lower "
      "bound on the pattern's latency; nginx's own cost is the same one subrequest either way).")
    w(f"- `wrk -t{E['R_THREADS']} -c{E['R_CONNECTIONS']} -d{E['R_DURATION']}s`, {E['R_ROUNDS']} round(s) "
      "after a warm-up: each round runs all nineteen (variant, scenario) runs once, in a fixed order "
      "that every other round reverses ((15), (14), (13) just before (1); (8), (7), (9), (10), (11), (12) after (5)). Tables show "
      "medians over rounds; ratios are the median of the per-round ratios, with their spread (min–max). "
      "nginx CPU per request: the worker's CPU time (all its threads) over the run, divided by the "
      "requests answered.")
    w("- Then paired runs (see [Paired runs](#paired-runs)): the pairs whose targets are closest, "
      "(2)/(1), (8)/(7), (13)/(1), and a control (1)/(1), each scenario of a pair run at the same "
      "time as the other, one in the nginx under test and one in its twin, then swapped; "
      f"{E['R_ROUNDS']} round(s) of `wrk -t{E['R_THREADS']} -c{E['R_CONNECTIONS']} -d{E['R_DURATION']}s` per half. "
      "Those targets are judged on them.")
    w("")


def results_table(run, v, w, scenarios=SESSION, calls="whoami calls"):
    w(f"| scenario | requests/s | p50 ms | p99 ms | req/s per round | nginx worker CPU (nginx thread + module thread) | nginx CPU µs / request | {calls} / request | non-2xx (+ 499 at wrk's stop) |")
    w("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for s in scenarios:
        name = NAMES[s]
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
    if (PRIMARY, 8) in run.med:
        w(f"## Results: OAuth2 ({PRIMARY} variant)")
        w("")
        w("Calls: (7)–(9) JWKS fetches (none expected: the worker fetched the key set when it "
          "started); (10)–(12) introspection calls.")
        w("")
        results_table(run, PRIMARY, w, OAUTH2, "calls to the double")
    if (PRIMARY, 13) in run.med:
        w(f"## Results: permission ({PRIMARY} variant)")
        w("")
        w("(1) and (2) are repeated from the first table (their calls: whoami calls). Calls of "
          "(13)–(15): Keto checks (whoami calls of (13), (14): none expected, the session is cached).")
        w("")
        results_table(run, PRIMARY, w, PERMISSION, "calls to the double")


def section_targets(run, w):
    w("## Targets")
    w("")
    w(f"Judged on the **{PRIMARY}** variant. Ratios: the median over rounds of the ratio within "
      "each round, of requests/s unless the row says nginx CPU per request; the first-seen JWT row "
      "the median of the per-round differences. Each row says which runs it is judged on: the "
      "sequential runs, or the [paired runs](#paired-runs) (both scenarios at the same time), "
      "whose control pair spreads far less.")
    w("")
    w("| check | value | target | |")
    w("|---|---:|---:|---|")
    for label, a, b, target in RATIOS:
        res, source = run.judged(b, a, "rps")
        if res is None:
            continue
        ok = res[0] >= target
        if not ok:
            run.missed.append(f"{label} ({PRIMARY}, {source}): {res[0]:.2f} < {target}")
        w(f"| {label} ({PRIMARY}, {source}) | {spread_text(res)} | ≥ {target} | {verdict(ok)} |")
    for row in token_targets(run):
        w(row)
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
    section_tokens_information(run, w)
    for v in run.variants:
        if (v, 1) in run.med and (v, 5) in run.med:
            w(f"- Ceiling of (2)/(5), {v} variant: (2) cannot beat (1) (it is (1) plus a check), so "
              f"(2)/(5) ≤ (1)/(5) = {run.med[(v, 1)]['rps'] / run.med[(v, 5)]['rps']:.2f}.")
    w("")
    if run.missed:
        w("**MISSED:** " + "; ".join(run.missed))
        w("")


def section_paired(run, w):
    if not run.paired_rows:
        return
    w("## Paired runs")
    w("")
    w("The ratios closest to their targets, measured a second way: the two scenarios at the same "
      "time, one in the nginx under test and one in its twin (a second nginx of the same "
      "configuration on other ports, on the same CPU, one `wrk` each with the same options), then "
      "swapped. Both see the same machine at the same moment, so the neighbours' drift that "
      "spreads the sequential runs cancels; a round's ratio is the geometric mean of its two "
      "halves, so that a difference between the two instances cancels too. The control row runs "
      "plain nginx against itself: its spread is what is left of the machine's noise. Each worker "
      "gets about half of the CPU: per-request costs are those of a saturated worker. CPU: the "
      "scheduler's count for all threads of each worker (`/proc/<pid>/task/*/schedstat`). "
      "The targets of these ratios are judged on this table; the sequential runs' values are "
      "shown beside them.")
    w("")
    w("| ratio | of | paired: median (rounds min–max) | halves min–max | medians (b, a) | sequential runs |")
    w("|---|---|---:|---:|---:|---:|")
    for label, a, b, kind in PAIRED:
        res = run.paired(a, b, kind)
        if res is None:
            continue
        fmt = "{:.3f}" if kind == "cpu" else "{:.2f}"
        unit = " µs" if kind == "cpu" else " req/s"
        seq = "—" if a == b else spread_text(run.sequential(a, b, kind), fmt)
        what = "nginx CPU per request" if kind == "cpu" else "requests/s"
        w(f"| {label} | {what} | {spread_text(res[:2], fmt)} | {fmt.format(min(res[2]))}–{fmt.format(max(res[2]))} | "
          f"{res[3]:,.2f} vs {res[4]:,.2f}{unit} | {seq} |")
    w("")
    w(f"wrk errors (status ≥ 400 or socket) in the paired runs: {run.paired_errors()}.")
    w("")


def signature_us(row):
    """µs per JWT signature check in one run, as the module timed them in nginx (its
    ory_oauth2_jwt_signature_* counters, read before and after the run); None without checks."""
    n = row.get("signature_checks", 0)
    return row["signature_seconds"] * 1e6 / n if n else None


def first_seen(run):
    """The first-seen JWT (9) against plain nginx (7), per round: (9) − (7) in nginx CPU per
    request, the signature check in the same (9) run as nginx timed it, and the rest (the
    difference minus the signature: what the target judges). Medians with per-round values,
    the signature checks per request of (9), and the crate's RS256-4096 costs (verify(),
    signature) from the micro-benchmark, or None; None without the runs."""
    diff = run.cpu_diff(PRIMARY, 9, 7)
    r7 = {r["round"]: r for r in run.by.get((PRIMARY, 7), [])}
    r9 = {r["round"]: r for r in run.by.get((PRIMARY, 9), [])}
    rounds = [k for k in sorted(r9) if k in r7 and signature_us(r9[k])]
    if diff is None or not rounds:
        return None
    sigs = [signature_us(r9[k]) for k in rounds]
    rests = [cpu_us(r9[k]) - cpu_us(r7[k]) - signature_us(r9[k]) for k in rounds]
    checks = sum(r9[k]["signature_checks"] for k in rounds) / sum(r9[k]["requests"] for k in rounds)
    return {
        "diff": diff,
        "signature": (statistics.median(sigs), sigs),
        "rest": (statistics.median(rests), rests),
        "checks_per_request": checks,
        "crate": verification().get("RS256-4096"),
    }


def token_targets(run):
    """The OAuth2 and permission rows of the targets table (judged, content variant)."""
    rows = []
    for label, a, b, limit in CPU_TARGETS:
        res, source = run.judged(b, a, "cpu")
        if res is None:
            continue
        ok = res[0] <= limit
        if not ok:
            run.missed.append(f"{label} ({source}): {res[0]:.3f} > {limit}")
        paired = run.paired(b, a, "cpu") if source == "paired runs" else None
        costs = (paired[3], paired[4]) if paired else (cpu_us(run.med[(PRIMARY, a)]), cpu_us(run.med[(PRIMARY, b)]))
        rows.append(f"| {label} ({source}) | {spread_text(res, '{:.3f}')} ({costs[0]:.2f} vs "
                    f"{costs[1]:.2f} µs) | ≤ {limit:.2f} | {verdict(ok)} |")
    fs = first_seen(run)
    if fs:
        rest, sig = fs["rest"], fs["signature"]
        ok = rest[0] <= FIRST_SEEN_MARGIN_US
        if not ok:
            run.missed.append(f"(9) first-seen JWT: {rest[0]:+.1f} µs of nginx CPU per request over plain "
                              f"nginx and the signature check > {FIRST_SEEN_MARGIN_US:g} µs")
        rows.append(f"| (9) − (7) − the signature check: a first-seen RS256-4096 JWT, nginx CPU per request "
                    f"over plain nginx and its signature check as nginx timed it ({spread_text(sig, '{:.1f}')} µs; "
                    f"see [JWT verification](#jwt-verification)) | {rest[0]:+.1f} µs (rounds "
                    f"{min(rest[1]):+.1f} to {max(rest[1]):+.1f}) | ≤ +{FIRST_SEEN_MARGIN_US:g} µs | {verdict(ok)} |")
    for label, a, b, target in RPS_TARGETS:
        res = run.ratio(PRIMARY, a, b)
        if res is None:
            continue
        ok = res[0] >= target
        if not ok:
            run.missed.append(f"{label}: {res[0]:.2f} < {target}")
        rows.append(f"| {label}, requests/s | {spread_text(res)} | ≥ {target} | {verdict(ok)} |")
    return rows


def section_tokens_information(run, w):
    rows = []
    for label, a, b, kind in INFO_RATIOS:
        res = run.cpu_ratio(PRIMARY, a, b) if kind == "cpu" else run.ratio(PRIMARY, a, b)
        if res is not None:
            what = "nginx CPU per request" if kind == "cpu" else "requests/s"
            rows.append(f"| {label} | {what} | {spread_text(res, '{:.3f}' if kind == 'cpu' else '{:.2f}')} |")
    if not rows:
        return
    w(f"OAuth2 and permission ratios for information ({PRIMARY} variant, no target):")
    w("")
    w("| ratio | of | value |")
    w("|---|---|---:|")
    for row in rows:
        w(row)
    w("")


def section_verification(run, w):
    costs = verification()
    if not costs:
        return
    w("## JWT verification")
    w("")
    w("The crate's own cost of one verification, with no nginx around it: "
      "`cargo test --release --lib -- --ignored --nocapture --exact oauth2::bench::verification_cost` "
      "(`src/oauth2/bench.rs`, the best of 25 rounds of about 20 ms, on the CPU the nginx under "
      f"test had), run after the rounds, {E.get('R_VERIFICATION_RUNS', '1')} time(s): the fastest of each. `verify()` is the whole verification of a token "
      "(header, key lookup, signature, claims); *signature* the signature check alone. Its "
      "tokens are the crate's fixtures, not this run's JWT, with the same algorithm and key size.")
    w("")
    busy = verification("R_VERIFICATION_BUSY")
    if busy:
        w("| token | verify() µs | signature µs | verify() µs, the other CPU busy | signature µs, the other CPU busy |")
        w("|---|---:|---:|---:|---:|")
    else:
        w("| token | verify() µs | signature µs |")
        w("|---|---:|---:|")
    for name, (whole, sig) in costs.items():
        extra = f" {busy[name][0]:.1f} | {busy[name][1]:.1f} |" if name in busy else (" — | — |" if busy else "")
        w(f"| {name} | {whole:.1f} | {sig:.1f} |{extra}")
    w("")
    if busy and "RS256-4096" in busy and "RS256-4096" in costs:
        w(f"*The other CPU busy*: the same test once more while a busy loop runs on the load "
          f"generator's CPU. On this machine the two CPUs are not independent: RS256-4096's "
          f"signature check takes {busy['RS256-4096'][1] / costs['RS256-4096'][1]:.1f}× as long "
          "then, so the nginx CPU time of every scenario also depends on how busy wrk and the doubles "
          "keep the other CPU, which differs between scenarios (most in the fast ones).")
        w("")
    fs = first_seen(run)
    if fs:
        m7, m9 = run.med[(PRIMARY, 7)], run.med[(PRIMARY, 9)]
        diff, sig, rest = fs["diff"], fs["signature"], fs["rest"]
        w(f"Beside the request cost ({PRIMARY} variant, nginx CPU per request, medians): plain nginx "
          f"with the JWT request (7) {cpu_us(m7):.2f} µs, the JWT verified on every request (9) "
          f"{cpu_us(m9):.2f} µs: +{spread_text(diff, '{:.1f}')} µs per request (median of the "
          "per-round differences).")
        w("")
        w(f"*The signature check in nginx*: {spread_text(sig, '{:.1f}')} µs per check, "
          f"{fs['checks_per_request']:.3f} checks per request of (9). The module times every "
          "signature check it makes (`ory_oauth2_jwt_signature_seconds_total` over "
          "`ory_oauth2_jwt_signature_checks_total`, read from its status endpoint before and "
          "after each (9) run): the same aws-lc-rs call as the micro-benchmark's *signature*, on "
          "the same key size, but inside a loaded nginx, with the caches it shares with the "
          "kernel's TCP work and with nginx, where the micro-benchmark repeats one check in a "
          "tight loop and keeps the fastest of 25 rounds. The rest, (9) − (7) minus that "
          f"check, is the module's own work around it: {rest[0]:+.1f} µs per request (rounds "
          f"{min(rest[1]):+.1f} to {max(rest[1]):+.1f}; target ≤ +{FIRST_SEEN_MARGIN_US:g}): "
          "finding and reading the token, the cache key, decoding and parsing the header and "
          "claims, the rules, storing the result (the module stores each verified token in "
          "the worker's cache even at `ory_oauth2_cache_ttl 0`, over an entry that exists: no "
          "eviction). The timing itself, two clock reads per check, is in it.")
        w("")
        if fs["crate"]:
            whole, crate_sig = fs["crate"]
            w(f"Against the micro-benchmark instead: {diff[0] - crate_sig:+.1f} µs over its "
              f"signature check ({crate_sig:.1f} µs), {diff[0] - whole:+.1f} µs over its `verify()` "
              f"({whole:.1f} µs): the check costs {sig[0] - crate_sig:+.1f} µs more in nginx than "
              "in the tight loop.")
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
    w("After the rounds the module's caches are full (10000 sessions from (3), each keyed on a "
      f"{E['R_SESSION_LEN']}-character value, and as many introspected tokens from (11)); the "
      "bursts also grow nginx's own connection and request pools, which glibc keeps.")
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
    for v, s, what in [(v, 4, "whoami calls") for v in run.variants] + [
            (PRIMARY, 12, "introspection calls"), (PRIMARY, 15, "decision calls")]:
        if (v, s) not in run.med:
            continue
        m = run.med[(v, s)]
        share = 100 * m["calls_reused_total"] / m["calls_total"] if m["calls_total"] else 0
        w(f"- {NAMES[s]} ({s}), {v} variant: {share:.1f}% of its {what} came on a reused "
          "connection despite `keepalive 64`: an `auth_request` subrequest only needs the reply's "
          "headers, so nginx closes the upstream connection instead of reading the body.")
    for log, what in (("introspect-module.log", "introspection calls"), ("keto-module.log", "Keto checks")):
        calls, reused, conns = log_reuse(log)
        if calls:
            w(f"- The module's {what} (the whole run, sanity checks included): {calls:,}, "
              f"{100 * reused / calls:.2f}% of them on a reused keep-alive connection ({conns} connections).")
    jwks_calls = log_reuse("jwks.log")[0]
    w(f"- JWKS fetches during the whole run: {jwks_calls} (the worker's one at start expected; "
      "a key set is refetched only for an unknown kid or when its TTL ends).")
    w(f"- Bursts (content variant): h2load `--h1 -n {E['R_BURST']} -c {E['R_BURST']}`, one session "
      f"value never sent before per burst. (6): the double sends the whoami answer over about "
      f"{E['R_SLOW_DELAY']} s, so every request arrives while the one call is open; (6'): the fast double.")
    sockets = [f"({s}) {v}: {int(m['socket_errors_total'])}" for (v, s), m in sorted(run.med.items(), key=lambda kv: (kv[0][1], kv[0][0]))
               if m["socket_errors_total"]]
    if sockets:
        w("- wrk socket errors (connect, read, write, timeout; all rounds): " + ", ".join(sockets) + ".")
    for label, path in (("nginx under test", E["R_MAIN_ERROR_LOG"]), ("doubles", E["R_DOUBLE_ERROR_LOG"])):
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


SECTIONS = [section_header, section_method, section_results, section_targets, section_paired, section_verification,
            section_memory, section_hot_path, section_details]


def print_summary(run):
    for v in run.variants:
        print()
        title = f"{v} variant" + (" (primary: targets judged here)" if v == PRIMARY else f" ({DILUTED})")
        print(title)
        print(f"{'scenario':<66} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'nginx CPU':>10} {'µs/req':>8} {'calls/req':>10}")
        for s, name in NAMES.items():
            if (v, s) in run.med:
                m = run.med[(v, s)]
                print(f"{f'({s}) {name}':<66} {m['rps']:>10,.0f} {ms(m['p50_us']):>8} {ms(m['p99_us']):>8} "
                      f"{m['nginx_cpu']:>9.0f}% {cpu_us(m):>8.2f} {run.per_request((v, s)):>10.3f}")
        for label, a, b, target in RATIOS:
            res = run.ratio(v, a, b)
            if res is None:
                continue
            if v == PRIMARY:
                jres, source = run.judged(b, a, "rps")
                judged = f"(target >= {target}, on the {source}: {spread_text(jres)})  {'met' if jres[0] >= target else 'MISSED'}"
            else:
                judged = "(information)"
            print(f"{label:<52} {ratio_text(run, v, a, b):<24} {judged}")
    for label, a, b, limit in CPU_TARGETS:
        res, source = run.judged(b, a, "cpu")
        if res is not None:
            print(f"{label + ' (' + source + ')':<72} {spread_text(res, '{:.3f}'):<26} (target <= {limit})  {'met' if res[0] <= limit else 'MISSED'}")
    for label, a, b, kind in PAIRED:
        res = run.paired(a, b, kind)
        if res is not None:
            print(f"{'paired ' + label:<72} {spread_text(res[:2], '{:.3f}'):<26} (halves {min(res[2]):.3f}–{max(res[2]):.3f})")
    fs = first_seen(run)
    if fs:
        rest, sig, diff = fs["rest"][0], fs["signature"][0], fs["diff"][0]
        crate = f"; micro-benchmark signature {fs['crate'][1]:.1f}" if fs["crate"] else ""
        print(f"{'(9) - (7) - signature check in nginx, nginx CPU µs per request':<72} {f'{rest:+.1f} µs':<26} "
              f"(target <= +{FIRST_SEEN_MARGIN_US:g}; (9) - (7) +{diff:.1f}, signature in nginx {sig:.1f}{crate})  "
              f"{'met' if rest <= FIRST_SEEN_MARGIN_US else 'MISSED'}")
    for label, a, b, target in RPS_TARGETS:
        res = run.ratio(PRIMARY, a, b)
        if res is not None:
            print(f"{label:<72} {spread_text(res):<26} (target >= {target})  {'met' if res[0] >= target else 'MISSED'}")
    for label, a, b, kind in INFO_RATIOS:
        res = run.cpu_ratio(PRIMARY, a, b) if kind == "cpu" else run.ratio(PRIMARY, a, b)
        if res is not None:
            print(f"{label + (' (CPU/req)' if kind == 'cpu' else ' (req/s)'):<72} {spread_text(res, '{:.3f}' if kind == 'cpu' else '{:.2f}'):<26} (information)")
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
