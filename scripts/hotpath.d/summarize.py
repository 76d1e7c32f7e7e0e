"""Reads the callgrind dumps of scripts/hotpath and prints what one request costs, per scenario.

    summarize.py WORK_DIR REQUESTS SCENARIO... [--check] [--markdown FILE] [--json FILE]

Each scenario left one dump per thread, WORK_DIR/callgrind.out.<part>-<thread>, in the order
the scenarios are named. From every dump it takes: instructions per thread, system calls by
the libc function that made them, and calls to the heap and lock functions of libc, each
divided by REQUESTS. With --check it exits 1 unless a cache hit costs no more heap calls,
system calls or lock calls than plain nginx and no work on another thread.
"""
import argparse
import collections
import glob
import json
import os
import re
import sys

HEAP = ("malloc", "calloc", "realloc", "free", "posix_memalign", "memalign", "aligned_alloc",
        "valloc", "reallocarray")
LOCKS = ("pthread_mutex_lock", "pthread_mutex_trylock", "pthread_rwlock_rdlock",
         "pthread_rwlock_wrlock", "pthread_cond_wait", "pthread_cond_timedwait",
         "pthread_cond_signal", "pthread_cond_broadcast", "__lll_lock_wait",
         "__lll_lock_wait_private", "sem_wait", "sem_post")
COST_LINE = re.compile(r"^[0-9+*-]")
NAMED = re.compile(r"^\((\d+)\)(?: (.*))?$")


def parse(path):
    """One callgrind dump -> (events, totals, exclusive cost by function, calls by callee)."""
    events, totals, positions = [], [], 1
    names = {}
    exclusive = collections.defaultdict(lambda: [0] * len(events))
    calls = collections.Counter()
    fn = callee = None
    after_calls = False

    def name(text):
        m = NAMED.match(text.strip())
        if not m:
            return text.strip()
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "?")

    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if COST_LINE.match(line):
                if after_calls:    # the inclusive cost of the call just named: not ours
                    after_calls = False
                    continue
                values = line.split()[positions:]
                costs = exclusive[fn]
                for i, v in enumerate(values):
                    costs[i] += int(v)
            elif line.startswith("fn="):
                fn = name(line[3:])
            elif line.startswith("cfn="):
                callee = name(line[4:])
            elif line.startswith("calls="):
                calls[callee] += int(line[6:].split()[0])
                after_calls = True
            elif line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith("positions:"):
                positions = len(line.split()) - 1
            elif line.startswith("summary:") or line.startswith("totals:"):
                totals = [int(v) for v in line.split()[1:]]
    return events, totals, exclusive, calls


def scenario_costs(dumps, requests):
    """Per-request costs of one scenario, from its dumps (one per thread)."""
    threads = {}
    syscalls = collections.Counter()
    calls = collections.Counter()
    for path in dumps:
        thread = int(path.rsplit("-", 1)[1])
        events, totals, exclusive, called = parse(path)
        ir = totals[events.index("Ir")] if totals else 0
        threads[thread] = ir / requests
        if "sysCount" in events:
            k = events.index("sysCount")
            for fn, costs in exclusive.items():
                if costs[k]:
                    syscalls[fn] += costs[k]
        calls.update(called)
    main = min(threads)
    return {
        "instructions": threads[main],
        "other_threads_instructions": sum(v for t, v in threads.items() if t != main),
        "syscalls": sum(syscalls.values()) / requests,
        "syscalls_by_function": {fn: n / requests for fn, n in sorted(syscalls.items())},
        "heap_calls": {fn: calls[fn] / requests for fn in HEAP if calls[fn]},
        "lock_calls": {fn: calls[fn] / requests for fn in LOCKS if calls[fn]},
    }


def fmt_calls(calls):
    return ", ".join(f"{fn} {n:.2f}" for fn, n in calls.items()) or "none"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("work")
    parser.add_argument("requests", type=int)
    parser.add_argument("scenarios", nargs="+")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--markdown")
    parser.add_argument("--json")
    args = parser.parse_args()
    work, requests, scenarios = args.work, args.requests, args.scenarios

    parts = collections.defaultdict(list)
    for path in glob.glob(os.path.join(work, "callgrind.out.*-*")):
        m = re.search(r"\.(\d+)-(\d+)$", path)
        if m:
            parts[int(m.group(1))].append(path)
    if len(parts) != len(scenarios):
        sys.exit(f"summarize: {len(parts)} callgrind dumps for {len(scenarios)} scenarios")
    result = {s: scenario_costs(sorted(parts[p]), requests)
              for s, p in zip(scenarios, sorted(parts))}

    base = result["plain"]
    def total(d):
        return sum(d.values())
    lines = [
        "| scenario | instructions / request (nginx thread) | instructions / request (other threads) "
        "| system calls / request | heap calls / request | lock calls / request |",
        "|---|---:|---:|---|---|---|",
    ]
    for s, c in result.items():
        # Calls made for fewer than one request in 200 (a timer, the connection) are left out.
        by_fn = ", ".join(f"{fn.split('@')[0]} {n:.2f}"
                          for fn, n in c["syscalls_by_function"].items() if n >= 0.005)
        lines.append(
            f"| {s} | {c['instructions']:,.0f} | {c['other_threads_instructions']:,.0f} "
            f"| {c['syscalls']:.2f} ({by_fn}) | {fmt_calls(c['heap_calls'])} "
            f"| {fmt_calls(c['lock_calls'])} |")

    failures = []
    verdicts = []
    extras = {}
    for s in ("hit", "hit+variables", "hit+zone", "hit+permission"):
        if s not in result:
            continue
        c = result[s]
        extra = {
            "instructions": c["instructions"] - base["instructions"],
            "heap calls": total(c["heap_calls"]) - total(base["heap_calls"]),
            "system calls": c["syscalls"] - base["syscalls"],
            "lock calls": total(c["lock_calls"]) - total(base["lock_calls"]),
            "instructions on other threads": c["other_threads_instructions"]
            - base["other_threads_instructions"],
        }
        extras[s] = extra
        verdicts.append(
            f"- {s} vs plain: {extra['instructions']:+,.0f} instructions, "
            f"{extra['heap calls']:+.3f} heap calls, {extra['system calls']:+.3f} system calls, "
            f"{extra['lock calls']:+.3f} lock calls per request; "
            f"{extra['instructions on other threads']:+.1f} instructions per request on other "
            f"threads (the module's Kratos client)")
        # Allow for the odd timer or log write over the whole run, not for one per request.
        for what in ("heap calls", "system calls", "lock calls"):
            if extra[what] > 0.02:
                failures.append(f"{s}: {extra[what]:+.3f} {what} per request more than plain")
        if extra["instructions on other threads"] > 2:
            failures.append(f"{s}: other threads ran {extra['instructions on other threads']:.0f} "
                            "instructions per request")
    if "hit+zone" in result and "hit" in result:
        zone_extra = extras["hit+zone"]["instructions"]
        hit_extra = extras["hit"]["instructions"]
        ratio = result["hit+zone"]["instructions"] / result["hit"]["instructions"]
        extras["hit+zone"]["vs hit"] = ratio
        verdicts.append(
            f"- hit+zone vs hit: {zone_extra - hit_extra:+,.0f} instructions per request "
            f"({ratio:.3f}x the per-worker cache's request)")
    notes = [
        "",
        "Per request, on one keep-alive connection, one request at a time. Under valgrind the "
        "clock is read with system calls (`clock_gettime`, `gettimeofday`); natively these are "
        "vDSO calls that do not enter the kernel. Heap calls are calls to libc's allocator, "
        "which nginx's pools use too (a request's pool, its header buffers); the module's "
        "own per-request memory comes from the request pool. Lock calls: pthread mutexes, "
        "read-write locks, condition variables, semaphores and glibc's low-level locks.",
    ]
    text = "\n".join(lines + [""] + verdicts + notes) + "\n"
    if failures:
        text += "\nFAILED:\n" + "\n".join(f"- {f}" for f in failures) + "\n"
    sys.stdout.write(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"requests": requests, "scenarios": result, "extra_over_plain": extras,
                       "failures": failures}, f,
                      indent=1)
    if args.check and failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
