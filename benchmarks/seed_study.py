#!/usr/bin/env python
"""How often does a small training run fail? Many seeds of one recipe, arm by arm.

Runs ``resattn train`` once per (arm, seed), each in its own process with its
own ``--out``, ``--jobs`` at a time (one thread each by default, so two jobs
fill two cores), then reports per arm: the failure rate (a run whose final
test top-1 is below ``near_chance`` (0.19 for 10 classes), or whose final training loss is still
within 10% of chance, ``ln(classes)``, measured towards the lowest loss its labels allow:
see ``verdict``), the spread of the final and best test
top-1 over the runs that did not fail, and the largest evaluation loss seen.
The defaults are ``make demo``'s own recipe (Attention-56 / 16 on ``digits``).

An arm is ``NAME=FLAGS``: extra ``resattn train`` flags for that arm, e.g.
``plain=--attention none`` or ``zero-gamma=--config cfg.json``. Finished runs
are reused (their ``metrics.jsonl`` is read again), so a study can be
extended or interrupted and started again.

Usage::

    python benchmarks/seed_study.py --seeds 10                      # attention and plain
    python benchmarks/seed_study.py --seeds 10 --arm "nal=--learning nal" --epochs 9
    python benchmarks/seed_study.py --report --out runs/seed_study  # the table again
"""
import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time

from _common import describe_machine
from resattn.training.callbacks import near_chance

#: ``make demo``'s training flags (examples/demo.py), less --epochs and --out.
DEMO = ["--model", "attention56_cifar", "--width-mult", "0.0625", "--dataset", "digits",
        "--batch-size", "64", "--warmup-epochs", "1", "--mixup-off-epochs", "3"]
DEFAULT_ARMS = ["attention=", "plain=--attention none"]


def parse_arm(text):
    name, sep, flags = text.partition("=")
    if not sep or not name or "/" in name:
        raise SystemExit("--arm must be NAME=FLAGS (NAME without '/'), got %r" % text)
    return name, shlex.split(flags)


def label_noise_of(out):
    """The ``label_noise`` a run was trained with, from its ``config.json`` (0 if none)."""
    path = os.path.join(out, "config.json")
    if not os.path.isfile(path):
        return 0.0
    try:
        with open(path) as f:
            return float(json.load(f).get("label_noise") or 0.0)
    except (ValueError, TypeError, AttributeError) as e:  # not JSON, not an object, not a number
        raise SystemExit("%s: cannot read its label_noise (%s); a run's config.json is an "
                         "object whose label_noise is a number or absent" % (path, e))


def run_verdict(out, classes, epochs):
    """:func:`verdict` of the run in folder ``out``, with the label noise it was trained on."""
    return verdict(read_rows(out), classes, epochs, label_noise_of(out))


def read_rows(out):
    path = os.path.join(out, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def noisy_label_loss(classes, label_noise):
    """The training loss of a classifier that knows every true class when ``label_noise``
    of the training labels are replaced by a uniformly drawn wrong one: the entropy of the
    label given the class, ``-(1-f) ln(1-f) - f ln(f / (classes-1))`` (0 without noise)."""
    f = float(label_noise)
    if f <= 0:
        return 0.0
    return -(1 - f) * math.log(1 - f) - f * math.log(f / (classes - 1))


def verdict(rows, classes, epochs, label_noise=0.0):
    """``(status, summary)`` of one run's rows: status 'ok', 'failed' or 'incomplete'.

    'failed': a final test top-1 below ``near_chance``, or a final training loss within
    10% of chance. Chance is ``ln(classes)``, a uniform guess; 10% is of the way from
    there down to the lowest loss the labels allow, ``noisy_label_loss`` (0 with clean
    labels, so the rule is then ``0.9 ln(classes)``; with 70% of the labels wrong a
    network that knows every class still has a training loss of 2.15 > 0.9 ln 10).
    """
    if len(rows) < epochs:
        return "incomplete", {}
    last = rows[-1]
    chance_loss = math.log(classes)
    floor = noisy_label_loss(classes, label_noise)
    # near_chance is the library's own (resattn train's health check uses it too).
    failed = (last["val_top1"] < near_chance(classes)
              or last["train_loss"] > chance_loss - 0.1 * (chance_loss - floor))
    best = max(rows, key=lambda r: r["val_top1"])
    return ("failed" if failed else "ok"), {
        "final_top1": last["val_top1"], "best_top1": best["val_top1"], "best_epoch": best["epoch"],
        "final_train_loss": last["train_loss"],
        "max_val_loss": max(r["val_loss"] for r in rows),
        "time_s": sum(r["time_s"] for r in rows)}


def spread(values):
    if not values:
        return "-"
    if len(values) == 1:
        return "%.4f" % values[0]
    return "%.4f +- %.4f (min %.4f, max %.4f)" % (statistics.mean(values),
                                                   statistics.stdev(values), min(values),
                                                   max(values))


def report(root, arms, seeds, classes, epochs):
    table = {}
    lines = ["| arm | runs | failed | final top-1 (runs that did not fail) | best top-1 | "
             "largest eval loss |", "|---|---:|---:|---|---|---:|"]
    for name in arms:
        runs = []
        for seed in seeds:
            status, summary = run_verdict(os.path.join(root, name, "seed%d" % seed),
                                          classes, epochs)
            if status != "incomplete":
                runs.append(dict(summary, seed=seed, status=status))
        ok = [r for r in runs if r["status"] == "ok"]
        failed = [r["seed"] for r in runs if r["status"] == "failed"]
        table[name] = {"runs": runs, "failed_seeds": failed}
        lines.append("| %s | %d | %d%s | %s | %s | %s |" % (
            name, len(runs), len(failed), " (seeds %s)" % ",".join(map(str, failed)) if failed
            else "", spread([r["final_top1"] for r in ok]), spread([r["best_top1"] for r in ok]),
            "%.3g" % max(r["max_val_loss"] for r in runs) if runs else "-"))
    return table, "\n".join(lines)


def run_study(root, arms, seeds, base, epochs, jobs=2, threads=1, classes=10):
    """Run every (arm, seed) not finished yet under ``root``; returns ``report(...)``."""
    todo = []
    # Seed by seed, so that a study stopped early has whole pairs (every arm at a seed).
    for seed in seeds:
        for name, flags in arms.items():
            out = os.path.join(root, name, "seed%d" % seed)
            if run_verdict(out, classes, epochs)[0] != "incomplete":
                continue
            # "{root}" and "{seed}" in an arm's flags: this study's folder and this seed
            # (a second phase names its first phase's checkpoint with them).
            flags = [f.replace("{root}", root).replace("{seed}", str(seed)) for f in flags]
            # A run stopped part-way (its checkpoint is written every epoch and on
            # Ctrl-C) goes on from it; anything else starts again.
            again = os.path.isfile(os.path.join(out, "last.params"))
            cmd = ([sys.executable, "-m", "resattn", "train"] + base + flags
                   + ["--epochs", str(epochs), "--seed", str(seed), "--out", out,
                      "--resume" if again else "--overwrite", "--no-progress"])
            todo.append((name, seed, out, cmd))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    running, tic = [], time.time()
    while todo or running:
        while todo and len(running) < jobs:
            name, seed, out, cmd = todo.pop(0)
            os.makedirs(out, exist_ok=True)
            log = open(os.path.join(out, "stdout.txt"), "a")
            running.append((name, seed, subprocess.Popen(cmd, stdout=log,
                                                         stderr=subprocess.STDOUT, env=env), log))
        time.sleep(0.5)
        for item in list(running):
            name, seed, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print("%s seed %d: exit %d (%.0f s into the study)"
                      % (name, seed, proc.returncode, time.time() - tic), flush=True)
    table, text = report(root, arms, seeds, classes, epochs)
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "summary.json"), "w") as f:
        json.dump({"arms": {n: shlex.join(f) for n, f in arms.items()}, "base": shlex.join(base),
                   "epochs": epochs, "seeds": seeds, "results": table}, f, indent=1)
    return table, text


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--arm", action="append", default=None,
                   help="NAME=FLAGS, repeatable (default: attention and plain)")
    p.add_argument("--epochs", type=int, default=15, help="default 15, as make demo")
    p.add_argument("--base", default=None,
                   help="the flags every arm shares (default: make demo's recipe)")
    p.add_argument("--classes", type=int, default=10, help="of the dataset, for 'chance'")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2)")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    p.add_argument("--out", default="runs/seed_study")
    p.add_argument("--report", action="store_true",
                   help="only print the table of what is finished in --out")
    args = p.parse_args(argv)
    arms = dict(parse_arm(a) for a in (args.arm or DEFAULT_ARMS))
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    base = shlex.split(args.base) if args.base is not None else DEMO
    if args.report:
        print(report(args.out, arms, seeds, args.classes, args.epochs)[1])
        return 0
    print(describe_machine(), flush=True)
    print(run_study(args.out, arms, seeds, base, args.epochs, args.jobs, args.threads,
                    args.classes)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
