#!/usr/bin/env python3
"""Medians of the drift passes' step times from an operator log.

The operator logs one "drift pass" line per pass at debug level
(DRIFTWARDEN_OPERATOR_LOG=info,driftwarden::operator::drift=debug); the
benchmarks keep that log with DRIFTWARDEN_BENCH_LOG=PATH. The times in a
line are cumulative from the pass's start, so each step is the difference
between two cumulative medians.

    benches/pass-steps.py op.log
"""
import json
import statistics
import sys

STEPS = [("read", "read_us"), ("plan", "planned_us"), ("execute", "executed_us"),
         ("status written", "written_us"), ("whole pass", "took_us")]


def main(path):
    passes = []
    for line in open(path, encoding="utf-8"):
        if '"drift pass"' not in line:
            continue
        event = json.loads(line)
        passes.append(event.get("fields", event))
    followed = [p for p in passes if p.get("full") in (None, "None")]
    print(f"{len(passes)} passes, {len(followed)} of them followed named changes (the rest were full)")
    medians = {key: statistics.median(int(p[key]) for p in followed) for _, key in STEPS if followed}
    previous = 0.0
    print("| step | median (ms) |")
    print("|---|---:|")
    for name, key in STEPS:
        if key not in medians:
            continue
        value = medians[key] / 1000
        shown = value if key == "took_us" else value - previous
        print(f"| {name} | {shown:.2f} |")
        if key != "took_us":
            previous = value
    undeclared = [p.get("undeclared_changed") for p in followed]
    all_judged = sum(1 for u in undeclared if u in (None, "None"))
    print(f"followed passes that judged every undeclared object: {all_judged} of {len(followed)}")


if __name__ == "__main__":
    main(sys.argv[1])
