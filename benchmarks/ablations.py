#!/usr/bin/env python
"""The paper's ablations at CPU scale, several seeds each, one command per experiment.

Each experiment is a set of arms (``resattn train`` flags) run over the same
seeds by :mod:`seed_study` (``--jobs`` runs at a time, one thread each), then
reported as a Markdown table (mean +- std over seeds, failures counted) and a
figure of every seed's test top-1 curve, arm by arm (``OUT/EXPERIMENT.png``). Every
arm but the first two of ``demo`` starts each residual unit at the identity
(``--zero-init-residual``), the fix that the ``demo`` experiment measures:

``attention-vs-plain``
    Attention-56 / 16 against the plain network of the same depth
    (``--attention none``) on cluttered digits at a 40-pixel canvas, where the
    digit is a small part of the image, and the attention runs' mask
    inside/outside-box score per stage (``--score``).
``arl-vs-nal``
    Attention residual learning ``(1 + M) T`` against naive attention learning
    ``M T`` with 3 and 6 attention modules (Attention-56 and -92 / 16, digits):
    the paper's Table 3, where naive attention degrades as modules are added.
``attention-types``
    Mixed, channel and spatial attention (the paper's Table 2), Attention-56 /
    16 on digits.
``attention-vs-plain-64``
    The same at the paper's 64-pixel canvas, one cluttered dataset for every
    seed (``--data-seed 0``, apart from the training seed), 5 seeds, 40 epochs.
    Reported: the difference attention - plain paired by seed with its 95%
    interval, over the runs that converged (a final training loss within 10%
    of the arm's lowest; the others are listed with the reason); the
    inside/outside-box score (ratio of means and AUC) per stage and seed of
    the attention runs' masks ``M`` and of the trunk features ``|T|`` of both
    arms, the baseline of what features do anyway
    (``OUT/attention-vs-plain-64-analysis.json``); ``resattn masks`` figures
    of the best and the worst attention seed.
``attention-vs-plain-64-phase2``
    Those runs trained on from their last checkpoint (``--finetune``) for 20
    more epochs, a cosine from a learning rate of 0.01 (a tenth of the first
    phase's peak) without mixup, so that every run reaches a plateau of its
    plain training loss; reported the same way. Runs ``attention-vs-plain-64``
    first where it is not finished.
``label-noise``
    Attention-56 / 16 against plain on digits with 0%, 30%, 50% and 70% of the
    training labels replaced by wrong ones (``--label-noise``; test labels
    true), 3 seeds, 40 epochs (at 15, the 50% and 70% runs were still
    learning): the paper's robustness claim (Table 6). Reported per
    noise level as above, and drawn as test top-1 against noise
    (``OUT/label-noise-top1.png``).
``demo``
    ``make demo``'s recipe, attention against plain, before and after the fix
    (10 seeds).
``demo-9-epochs``
    The same cut to 9 epochs, where runs that leave the chance plateau late
    fail (10 seeds).

Sizes and schedules are chosen so that each experiment takes about an hour or
less on two cores (``--seeds`` and ``--epochs`` change them). Finished runs are
reused, so an experiment can be interrupted and started again.

Usage::

    python benchmarks/ablations.py demo                      # 10 seeds, 4 arms
    python benchmarks/ablations.py arl-vs-nal                # 3 seeds
    python benchmarks/ablations.py attention-vs-plain --score
    python benchmarks/ablations.py attention-vs-plain-64     # 5 seeds, 40 epochs, 64 px
    python benchmarks/ablations.py attention-vs-plain-64-phase2   # 20 more epochs each
    python benchmarks/ablations.py label-noise          # 4 levels x 2 arms x 3 seeds, 40 epochs
"""
import argparse
import json
import os
import sys

from _common import describe_machine
from seed_study import read_rows, run_study, run_verdict

_A56 = ["--model", "attention56_cifar", "--width-mult", "0.0625"]
_A92 = ["--model", "attention92_cifar", "--width-mult", "0.0625"]
_RECIPE = ["--batch-size", "64", "--warmup-epochs", "1", "--mixup-off-epochs", "3"]
_DIGITS = ["--dataset", "digits"] + _RECIPE
_CLUTTERED = ["--dataset", "cluttered-digits", "--image-size", "40"] + _RECIPE
_CLUTTERED64_DATA = ["--dataset", "cluttered-digits", "--data-seed", "0"]
_CLUTTERED64 = _CLUTTERED64_DATA + _RECIPE
_ZERO, _NO_ZERO = ["--zero-init-residual"], ["--no-zero-init-residual"]

#: Every arm of every experiment: its whole ``resattn train`` flags (less --epochs, --seed,
#: --out). One directory per arm and seed, shared by the experiments that use the arm.
ARMS = {
    "attention": _A56 + _DIGITS + _NO_ZERO,            # make demo's recipe before the fix
    "plain": _A56 + _DIGITS + ["--attention", "none"] + _NO_ZERO,
    "attention-zero-init": _A56 + _DIGITS + _ZERO,     # ... and with it
    "plain-zero-init": _A56 + _DIGITS + ["--attention", "none"] + _ZERO,
    "channel-zero-init": _A56 + _DIGITS + ["--attention", "channel"] + _ZERO,
    "spatial-zero-init": _A56 + _DIGITS + ["--attention", "spatial"] + _ZERO,
    "nal56-zero-init": _A56 + _DIGITS + ["--learning", "nal"] + _ZERO,
    "arl92-zero-init": _A92 + _DIGITS + _ZERO,
    "nal92-zero-init": _A92 + _DIGITS + ["--learning", "nal"] + _ZERO,
    # The failing command: make demo's recipe cut to 9 epochs.
    "attention-9ep": _A56 + _DIGITS + _NO_ZERO,
    "attention-zero-init-9ep": _A56 + _DIGITS + _ZERO,
    "plain-9ep": _A56 + _DIGITS + ["--attention", "none"] + _NO_ZERO,
    "cluttered40-attention-zero-init": _A56 + _CLUTTERED + _ZERO,
    "cluttered40-plain-zero-init": _A56 + _CLUTTERED + ["--attention", "none"] + _ZERO,
    # The paper's setting, converged: a 64 px canvas and one dataset for every seed
    # (--data-seed 0), the training seed apart.
    "cluttered64-attention": _A56 + _CLUTTERED64 + _ZERO,
    "cluttered64-plain": _A56 + _CLUTTERED64 + ["--attention", "none"] + _ZERO,
}
# A second phase for the 64 px runs: from each run's last checkpoint, a fresh cosine from
# a tenth of the first phase's peak rate, no mixup (mixup's loss is not the training loss
# the convergence rule reads), no warm-up; {root} and {seed} are the study's folder and
# the seed (seed_study.run_study fills them in).
_POLISH = ["--lr", "0.01", "--lr-mode", "cosine", "--warmup-epochs", "0", "--mixup-alpha",
           "0", "--mixup-off-epochs", "0"]
for _arm, _flags in (("attention", []), ("plain", ["--attention", "none"])):
    ARMS["cluttered64-%s-phase2" % _arm] = (
        _A56 + _CLUTTERED64_DATA + ["--batch-size", "64"] + _flags + _POLISH
        + ["--finetune", "{root}/cluttered64-%s/seed{seed}/last.params" % _arm])
# Robustness to noisy labels (the paper's Table 6): digits, a fraction of the training
# labels replaced by wrong ones (test labels true), attention and plain of the same depth.
for _noise in (0, 30, 50, 70):
    for _arm, _flags in (("attention", []), ("plain", ["--attention", "none"])):
        ARMS["noise%d-%s" % (_noise, _arm)] = (_A56 + _DIGITS + _flags + _ZERO + [
            "--label-noise", "%g" % (_noise / 100), "--data-seed", "0"])

#: An experiment that goes on from another's checkpoints runs that one first.
PREREQUISITES = {"attention-vs-plain-64-phase2": "attention-vs-plain-64"}
#: ``name: (arms, epochs, default seeds)``.
EXPERIMENTS = {
    "demo": (["attention", "plain", "attention-zero-init", "plain-zero-init"], 15, 10),
    "demo-9-epochs": (["attention-9ep", "attention-zero-init-9ep", "plain-9ep"], 9, 10),
    "arl-vs-nal": (["attention-zero-init", "nal56-zero-init", "arl92-zero-init",
                    "nal92-zero-init"], 15, 3),
    "attention-types": (["attention-zero-init", "channel-zero-init", "spatial-zero-init"],
                        15, 3),
    "attention-vs-plain": (["cluttered40-attention-zero-init", "cluttered40-plain-zero-init"],
                           15, 3),
    "attention-vs-plain-64": (["cluttered64-attention", "cluttered64-plain"], 40, 5),
    "attention-vs-plain-64-phase2": (["cluttered64-attention-phase2",
                                      "cluttered64-plain-phase2"], 20, 5),
    "label-noise": (["noise%d-%s" % (n, a) for n in (0, 30, 50, 70)
                     for a in ("attention", "plain")], 40, 3),
}


def plot(root, arms, seeds, path, title, columns=4, before=None, log_loss=False):
    """Every seed's test top-1 and training loss per epoch, one pair of panels per arm.

    ``before``: ``{arm: first-phase arm}``; that arm's epochs are drawn first and the
    second phase's after them, a dotted line between. ``log_loss``: a log scale for the loss.
    """
    before = before or {}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = min(columns, len(arms))
    lines = -(-len(arms) // columns)
    fig, axes = plt.subplots(2 * lines, columns, figsize=(3.2 * columns, 4.6 * lines),
                             sharex=True, squeeze=False)
    for i, name in enumerate(arms):
        top, bottom = axes[2 * (i // columns)][i % columns], axes[2 * (i // columns) + 1][
            i % columns]
        boundary = None
        for seed in seeds:
            rows = read_rows(os.path.join(root, name, "seed%d" % seed))
            if name in before:
                first = read_rows(os.path.join(root, before[name], "seed%d" % seed))
                boundary = len(first)
                rows = first + [dict(r, epoch=r["epoch"] + len(first)) for r in rows]
            if rows:
                epochs = [r["epoch"] for r in rows]
                top.plot(epochs, [r["val_top1"] for r in rows], lw=1, label="seed %d" % seed)
                bottom.plot(epochs, [r["train_loss"] for r in rows], lw=1)
        if boundary:
            for ax in (top, bottom):
                ax.axvline(boundary + 0.5, color="k", ls=":", lw=1)
        top.set_title(name, fontsize=9)
        top.set_ylim(0, 1)
        bottom.set_xlabel("epoch")
        if log_loss:
            bottom.set_yscale("log")
        else:
            bottom.set_ylim(0, 2.5)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
        if i % columns == 0:
            top.set_ylabel("test top-1")
            bottom.set_ylabel("training loss")
    for j in range(len(arms), lines * columns):
        for ax in (axes[2 * (j // columns)][j % columns], axes[2 * (j // columns) + 1][j % columns]):
            ax.axis("off")
    axes[0][0].legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def interval(values, level=0.95):
    """``(mean, half-width)`` of Student's t interval for the mean of ``values``."""
    import statistics

    from scipy import stats
    if len(values) < 2:
        return (values[0] if values else float("nan")), float("nan")
    half = stats.t.ppf(0.5 + level / 2, len(values) - 1) * statistics.stdev(values) \
        / len(values) ** 0.5
    return statistics.mean(values), half


def describe_interval(mean, half, count, what="run", sign=False):
    """``mean +- half (count whats)``; one value has no interval and none has no mean."""
    if count == 0:
        return "no %s" % what
    value = ("%+.4f" if sign else "%.4f") % mean
    if count == 1:
        return "%s (1 %s, no interval)" % (value, what)
    return "%s +- %.4f (%d %ss)" % (value, half, count, what)


def converged(root, name, seeds, epochs, classes=10, tolerance=0.10):
    """``(runs, left_out)`` of one arm: the finished runs whose final training loss is within
    ``tolerance`` of the arm's lowest, ``{seed: summary}``, and the others, ``{seed: why}``."""
    finished, left_out = {}, {}
    for seed in seeds:
        status, summary = run_verdict(os.path.join(root, name, "seed%d" % seed), classes,
                                      epochs)
        if status == "incomplete":
            left_out[seed] = "not finished"
        elif status == "failed":
            left_out[seed] = "ended near chance (top-1 %.3f, training loss %.3f)" % (
                summary["final_top1"], summary["final_train_loss"])
        else:
            finished[seed] = summary
    if finished:
        best = min(r["final_train_loss"] for r in finished.values())
        for seed, r in list(finished.items()):
            if r["final_train_loss"] > (1 + tolerance) * best:
                left_out[seed] = ("not converged: final training loss %.3f, more than %d%% "
                                  "above the arm's lowest %.3f" % (
                                      r["final_train_loss"], round(100 * tolerance), best))
                del finished[seed]
    return finished, left_out


def settling(root, name, seed, last=3):
    """Relative fall of the training loss over the ``last`` epochs (mixup is off for them):
    how far from a plateau a run still was when its schedule ended."""
    rows = read_rows(os.path.join(root, name, "seed%d" % seed))
    if len(rows) < last:
        return float("nan")
    before, after = rows[-last]["train_loss"], rows[-1]["train_loss"]
    return (before - after) / before


def compare(root, first, second, seeds, epochs):
    """Paired by seed: ``first`` minus ``second`` in final test top-1 over the seeds where
    both arms converged; a dict with the differences, their mean and 95% interval."""
    a, out_a = converged(root, first, seeds, epochs)
    b, out_b = converged(root, second, seeds, epochs)
    both = [s for s in seeds if s in a and s in b]
    diffs = [a[s]["final_top1"] - b[s]["final_top1"] for s in both]
    mean, half = interval(diffs)
    return {"first": first, "second": second, "seeds": both, "differences": diffs,
            "mean": mean, "ci95": half,
            "first_top1": {s: a[s]["final_top1"] for s in a},
            "second_top1": {s: b[s]["final_top1"] for s in b},
            "first_loss": {s: a[s]["final_train_loss"] for s in a},
            "second_loss": {s: b[s]["final_train_loss"] for s in b},
            "first_settling": {s: settling(root, first, s) for s in a},
            "second_settling": {s: settling(root, second, s) for s in b},
            "left_out": {first: out_a, second: out_b}}


def describe_comparison(c):
    lines = ["| seed | %s: test top-1 (final training loss; its fall over the last 3 "
             "epochs) | %s | difference |" % (c["first"], c["second"]), "|---:|---:|---:|---:|"]
    for seed, d in zip(c["seeds"], c["differences"]):
        lines.append("| %d | %.4f (%.3f; %.1f%%) | %.4f (%.3f; %.1f%%) | %+.4f |" % (
            seed, c["first_top1"][seed], c["first_loss"][seed],
            100 * c["first_settling"][seed], c["second_top1"][seed], c["second_loss"][seed],
            100 * c["second_settling"][seed], d))
    lines.append("| mean, 95%% interval | | | **%s** |" % describe_interval(
        c["mean"], c["ci95"], len(c["seeds"]), "pair", sign=True))
    for arm, why in c["left_out"].items():
        for seed, reason in sorted(why.items()):
            lines.append("| %d | left out of %s: %s | | |" % (seed, arm, reason))
    return "\n".join(lines)


def box_scores(root, arms, seeds, canvas=64, data_seed=0):
    """Inside/outside-box scores of each run's ``best.params`` on the fixed test set.

    For every arm and seed, per stage: the soft masks' ratio of means and AUC
    (attention arms), and the same two scores of the trunk features' magnitude
    ``|T|`` (every arm; for a plain network the output of the units standing
    where the module's trunk would), the baseline of what features do anyway.
    Returns ``{arm: {seed: {"mask_ratio": {stage: v}, ...}}}``.
    """
    import resattn
    from resattn.data import get_dataset
    from resattn.masks import score_by_stage
    import numpy as np
    sets = {}

    def test_set(seed):  # data_seed None: each run made its own data from its seed
        key = seed if data_seed is None else data_seed
        if key not in sets:
            data = get_dataset("cluttered-digits", train=False, seed=key, image_size=canvas)
            sets[key] = np.stack([data[i][0].asnumpy() for i in range(len(data))]), data.boxes
        return sets[key]

    found = {}
    for arm in arms:
        for seed in seeds:
            params = os.path.join(root, arm, "seed%d" % seed, "best.params")
            if not os.path.isfile(params):
                continue
            x, boxes = test_set(seed)
            net = resattn.load_model(params)
            plain = not net.attention_modules
            row = {}
            for source in (("trunk",) if plain else ("mask", "trunk")):
                for score in ("ratio", "auc"):
                    row["%s_%s" % (source, score)] = dict(score_by_stage(
                        net, x, boxes, batch_size=120, source=source, score=score))
            found.setdefault(arm, {})[seed] = row
    return found


def describe_scores(scores):
    """A Markdown table: per arm, score and stage, the mean +- std over seeds and each seed."""
    import statistics
    lines = ["| arm | map | score | stage | mean +- std over seeds | per seed |",
             "|---|---|---|---|---|---|"]
    for arm, by_seed in scores.items():
        keys = next(iter(by_seed.values())).keys()
        for key in keys:
            source, score = key.split("_")
            for stage in next(iter(by_seed.values()))[key]:
                values = [by_seed[s][key][stage] for s in sorted(by_seed)]
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                lines.append("| %s | %s | %s | %s | %.3f +- %.3f | %s |" % (
                    arm, "M" if source == "mask" else "|T|", score, stage,
                    statistics.mean(values), std, ", ".join("%.3f" % v for v in values)))
    return "\n".join(lines)


def mask_figures(root, arm, seeds, epochs, out, indices=(0, 1, 2, 3)):
    """``resattn masks`` figures of the best and the worst converged seed of ``arm``."""
    import subprocess
    runs, _ = converged(root, arm, seeds, epochs)
    # Logs kept without their weights (benchmarks/results/) still give every table.
    runs = {s: r for s, r in runs.items()
            if os.path.isfile(os.path.join(root, arm, "seed%d" % s, "best.params"))}
    if not runs:
        return {}
    ranked = sorted(runs, key=lambda s: runs[s]["final_top1"])
    figures = {}
    for label, seed in (("best", ranked[-1]), ("worst", ranked[0])):
        path = os.path.join(out, "masks_%s_%s_seed%d.png" % (arm, label, seed))
        subprocess.run([sys.executable, "-m", "resattn", "masks", "--params",
                        os.path.join(root, arm, "seed%d" % seed, "best.params"),
                        "--dataset", "cluttered-digits", "--index"]
                       + [str(i) for i in indices] + ["--score", "-o", path], check=True)
        figures[label] = {"seed": seed, "top1": runs[seed]["final_top1"], "path": path}
    return figures


def noise_table(root, seeds, epochs, levels=(0, 30, 50, 70)):
    """Per noise level: both arms' converged runs and the paired difference."""
    found = {}
    for level in levels:
        found[level] = compare(root, "noise%d-attention" % level, "noise%d-plain" % level,
                               seeds, epochs)
    return found


def describe_noise(table):
    lines = ["| training labels replaced | attention: test top-1 | plain: test top-1 | "
             "attention - plain, paired (95% interval) | left out |", "|---:|---|---|---|---|"]
    for level, c in table.items():
        cells = []
        for key in ("first_top1", "second_top1"):
            cells.append(describe_interval(*interval(list(c[key].values())), len(c[key])))
        left = "; ".join("%s seed %d: %s" % (arm, seed, why) for arm, w in c["left_out"].items()
                         for seed, why in sorted(w.items())) or "none"
        lines.append("| %d%% | %s | %s | %s | %s |" % (
            level, cells[0], cells[1],
            describe_interval(c["mean"], c["ci95"], len(c["seeds"]), "pair", sign=True), left))
    return "\n".join(lines)


def plot_noise(table, path):
    """Test top-1 against the fraction of wrong training labels, both arms, every seed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    levels = list(table)
    for key, label, colour, shift in (("first_top1", "attention (Attention-56 / 16)", "C0",
                                       -0.6), ("second_top1", "plain, same depth", "C1", 0.6)):
        means, halves = zip(*(interval(list(table[n][key].values())) for n in levels))
        ax.errorbar([n + shift for n in levels], means, yerr=halves, color=colour, marker="o",
                    capsize=3, label=label)
        for n in levels:
            values = list(table[n][key].values())
            ax.scatter([n + shift] * len(values), values, color=colour, s=8, alpha=0.5)
    ax.set_xlabel("training labels replaced by wrong ones (%)")
    ax.set_ylabel("test top-1 (true labels)")
    ax.set_xticks(levels)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("label noise: mean and 95% interval over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("experiment", choices=sorted(EXPERIMENTS))
    p.add_argument("--seeds", type=int, default=None, help="default: the experiment's")
    p.add_argument("--epochs", type=int, default=None, help="default: the experiment's")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--score", action="store_true",
                   help="attention-vs-plain: also the masks' inside/outside-box score")
    p.add_argument("--out", default="runs/study", help="one folder per arm and seed")
    args = p.parse_args(argv)
    names, epochs, seeds = EXPERIMENTS[args.experiment]
    epochs = args.epochs or epochs
    seeds = list(range(args.seeds or seeds))
    print(describe_machine(), flush=True)
    first = PREREQUISITES.get(args.experiment)
    if first is not None:  # its own epochs: --epochs is this experiment's
        print("first %s (%d epochs), which %s goes on from" % (
            first, EXPERIMENTS[first][1], args.experiment), flush=True)
        print(run_study(args.out, {n: list(ARMS[n]) for n in EXPERIMENTS[first][0]}, seeds,
                        [], EXPERIMENTS[first][1], args.jobs, args.threads)[1], flush=True)
    arms = {name: list(ARMS[name]) for name in names}
    table, text = run_study(args.out, arms, seeds, [], epochs, args.jobs, args.threads)
    print(text)
    figure = os.path.join(args.out, "%s.png" % args.experiment)
    # A second phase is drawn after its first: each arm after the first's arm in its place.
    before = dict(zip(names, EXPERIMENTS[first][0])) if first is not None else {}
    plot(args.out, arms, seeds, figure,
         "%s: test top-1 per epoch, %d seeds" % (args.experiment, len(seeds)), before=before,
         log_loss=bool(before))
    print("figure: %s" % figure)
    with open(os.path.join(args.out, "%s.json" % args.experiment), "w") as f:
        json.dump({"arms": arms, "epochs": epochs, "seeds": seeds, "results": table}, f,
                  indent=1)
    if args.experiment.startswith("attention-vs-plain-64"):
        comparison = compare(args.out, *names, seeds, epochs)
        print(describe_comparison(comparison))
        scores = box_scores(args.out, names, seeds)
        print(describe_scores(scores))
        figures = mask_figures(args.out, names[0], seeds, epochs, args.out)
        for label, fig in figures.items():
            print("masks of the %s seed (%d, top-1 %.4f): %s" % (
                label, fig["seed"], fig["top1"], fig["path"]))
        _write_json(os.path.join(args.out, "%s-analysis.json" % args.experiment),
                    {"comparison": comparison, "box_scores": scores, "mask_figures": figures})
    elif args.experiment == "label-noise":
        table = noise_table(args.out, seeds, epochs)
        print(describe_noise(table))
        path = os.path.join(args.out, "label-noise-top1.png")
        plot_noise(table, path)
        print("figure: %s" % path)
        _write_json(os.path.join(args.out, "%s-analysis.json" % args.experiment), table)
    elif args.score and args.experiment == "attention-vs-plain":
        scores = box_scores(args.out, names, seeds, canvas=40, data_seed=None)
        print(describe_scores(scores))
        _write_json(os.path.join(args.out, "mask_scores.json"), scores)
    return 0


def _write_json(path, value):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
