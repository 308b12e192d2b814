#!/usr/bin/env python3
"""Turns a `cargo bench --bench fragment --bench page` run into the tables of BENCHMARKS.md.

Usage: cargo bench --bench fragment --bench page | tee target/bench.log
       python3 benches/tables.py target/bench.log

Times come from criterion's estimates (target/criterion/*/*/new/estimates.json: the slope when
criterion fitted one, else the mean, which is what criterion prints as `time:`); round trips from
the `round-trips` lines the page benchmark prints.
"""

import json
import re
import sys
from pathlib import Path

CRITERION = Path(__file__).resolve().parent.parent / "target" / "criterion"


def estimate(directory):
    data = json.loads((CRITERION / directory / "new" / "estimates.json").read_text())
    est = data.get("slope") or data["mean"]
    ci = est["confidence_interval"]
    return est["point_estimate"], ci["lower_bound"], ci["upper_bound"]


def fmt(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} µs"
    return f"{ns:.0f} ns"


def main():
    log = Path(sys.argv[1]).read_text() if len(sys.argv) > 1 else ""
    trips = {}
    for m in re.finditer(r"round-trips (\S+)\s+N=(\d+)\s+round_trips=(\d+)", log):
        trips[(m.group(1), int(m.group(2)))] = int(m.group(3))

    frag = {}
    for group in ["fragment", "round_trip"]:
        print(f"| {group} bench | time (95% CI) |")
        print("|---|---|")
        for d in sorted((CRITERION / group).iterdir()):
            if (d / "new" / "estimates.json").exists():
                title = json.loads((d / "new" / "benchmark.json").read_text())["function_id"]
                t, lo, hi = estimate(f"{group}/{d.name}")
                frag[title] = t
                print(f"| `{title}` | {fmt(t)} ({fmt(lo)} – {fmt(hi)}) |")
        print()

    configs = [
        "uncached", "embedded/cold", "embedded/warm", "memcached/cold", "memcached/warm",
        "memcached_l1/cold", "memcached_l1/warm", "redis/cold", "redis/warm", "redis_l1/cold",
        "redis_l1/warm", "baseline_meta/cold", "baseline_meta/warm", "baseline_text/cold",
        "baseline_text/warm",
    ]
    sizes = [10, 100, 1000]
    page = {}
    print("| page | " + " | ".join(f"N={n}: time | round trips" for n in sizes) + " |")
    print("|---|" + "---|---|" * len(sizes))
    for c in configs:
        cells = []
        for n in sizes:
            d = f"page/{c.replace('/', '_')}_{n}"
            try:
                t, _, _ = estimate(d)
            except FileNotFoundError:
                cells += ["–", "–"]
                continue
            page[(c, n)] = t
            cells += [fmt(t), str(trips.get((c, n), "?"))]
        print(f"| {c} | " + " | ".join(cells) + " |")

    print()
    for c in ["memcached/warm", "memcached_l1/warm"]:
        for b in ["baseline_meta/warm", "baseline_text/warm"]:
            if (c, 100) in page and (b, 100) in page:
                print(f"N=100: {b} / {c} = {page[(b, 100)] / page[(c, 100)]:.1f}x (target >= 20x)")
    for hit in ["hit/embedded_comment_html", "hit/embedded_fragment_api"]:
        if hit in frag and "render/comment_html" in frag:
            print(f"{hit} / render/comment_html = {frag[hit] / frag['render/comment_html']:.2f} (target <= 0.10)")


if __name__ == "__main__":
    main()
