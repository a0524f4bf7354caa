#!/usr/bin/env python
"""How right are the health warnings? Replay the rule on finished runs, healthy and failed.

Reads every run under the given folders (``metrics.jsonl`` and ``config.json``, as
``resattn train`` and ``benchmarks/seed_study.py`` leave them), judges each run by how it
ended (``seed_study.verdict``: failed = final test top-1 below ``near_chance`` or a
training loss still within 10% of chance; a run stopped by a non-finite loss is failed
too), then replays :func:`resattn.training.run_health` epoch by epoch for each rule in a
grid of ``grace`` (at least that many epochs after warm-up before anything is judged),
``fraction`` (the grace is at least that share of the schedule, at most ``GRACE_MAX``
epochs) and ``persist`` (epochs running a problem must hold). For each rule it prints:

- precision: of the runs that got a warning, the share that ended failed;
- recall: of the runs that ended failed, the share warned before their last epoch;
- the epoch of the first warning in failed runs.

Usage::

    python benchmarks/health_replay.py runs/health15 runs/health9
"""
import argparse
import glob
import json
import math
import os
import sys

from _common import describe_machine
from resattn.training.callbacks import (GRACE_EPOCHS, GRACE_FRACTION, GRACE_MAX, PERSIST_EPOCHS,
                                       run_health)
from seed_study import read_rows, verdict


def running(run):
    """Whether a ``resattn train`` still holds the run directory's lock."""
    from resattn.training.rundir import RunDirInUseError, lock_run_dir
    try:
        lock_run_dir(run).release()
    except RunDirInUseError:
        return True
    return False


def load_runs(folders, classes):
    """``[(name, rows, warmup, epochs, failed)]`` of every finished or stopped run."""
    runs = []
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "**", "metrics.jsonl"),
                                     recursive=True)):
            run = os.path.dirname(path)
            rows = read_rows(run)
            if not rows:
                continue
            with open(os.path.join(run, "config.json")) as f:
                config = json.load(f)
            epochs, warmup = config.get("epochs", len(rows)), config.get("warmup_epochs", 0)
            status, _ = verdict(rows, classes, epochs)
            last = rows[-1]
            if status == "incomplete":
                if running(run):
                    continue
                status = "failed"  # stopped early (a non-finite loss ends a run)
            runs.append((os.path.relpath(run), rows, warmup, epochs, status == "failed"))
    return runs


def first_epoch(epochs, warmup, grace, fraction):
    return warmup + min(GRACE_MAX, max(grace, int(math.ceil(fraction * epochs))))


def replay(runs, classes, grace, fraction, persist):
    """``(precision, recall, first-warning epochs of failed runs, false alarms)``."""
    warned, first = {}, {}
    for name, rows, warmup, epochs, _ in runs:
        start = first_epoch(epochs, warmup, grace, fraction)
        for end in range(1, len(rows)):  # before the last epoch: a warning, not the verdict
            if run_health(rows[:end], classes, start, persist):
                warned[name] = True
                first[name] = rows[end - 1]["epoch"]
                break
    failed = {name for name, _, _, _, bad in runs if bad}
    hits = [n for n in warned if n in failed]
    precision = len(hits) / len(warned) if warned else float("nan")
    recall = len([n for n in failed if n in warned]) / len(failed) if failed else float("nan")
    return precision, recall, sorted(first[n] for n in hits), sorted(set(warned) - failed)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="folders of runs (searched recursively)")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--grace", default="0,2,4", help="least grace epochs to try")
    p.add_argument("--fraction", default="0,0.2,0.35,0.5",
                   help="grace as a share of the schedule, to try")
    p.add_argument("--persist", default="1,2,3", help="persistence epochs to try")
    args = p.parse_args(argv)
    print(describe_machine())
    runs = load_runs(args.folders, args.classes)
    failed = sum(1 for r in runs if r[4])
    print("%d runs: %d failed, %d healthy" % (len(runs), failed, len(runs) - failed))
    for name, rows, warmup, epochs, bad in runs:
        print("  %-40s %s after %d of %d epochs (warm-up %d), final top-1 %.4f" % (
            name, "FAILED" if bad else "healthy", len(rows), epochs, warmup,
            rows[-1]["val_top1"]))
    print("\n%5s %8s %7s %9s %6s  %-24s %s" % ("grace", "fraction", "persist", "precision",
                                                "recall", "first warning (failed)",
                                                "false alarms"))
    for grace in map(int, args.grace.split(",")):
        for fraction in map(float, args.fraction.split(",")):
            for persist in map(int, args.persist.split(",")):
                precision, recall, first, false = replay(runs, args.classes, grace, fraction,
                                                         persist)
                mark = " <- the library's rule" if (grace, fraction, persist) == (
                    GRACE_EPOCHS, GRACE_FRACTION, PERSIST_EPOCHS) else ""
                print("%5d %8.2f %7d %9.2f %6.2f  %-24s %d%s" % (
                    grace, fraction, persist, precision, recall,
                    ",".join(map(str, first)) or "-", len(false), mark))
    return 0


if __name__ == "__main__":
    sys.exit(main())
