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
``label-noise``
    Attention-56 / 16 against plain on digits with 0%, 30%, 50% and 70% of the
    training labels replaced by wrong ones (``--label-noise``; test labels
    true), 3 seeds: the paper's robustness claim (Table 6).
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
"""
import argparse
import json
import os
import sys

from _common import describe_machine
from seed_study import read_rows, run_study

_A56 = ["--model", "attention56_cifar", "--width-mult", "0.0625"]
_A92 = ["--model", "attention92_cifar", "--width-mult", "0.0625"]
_RECIPE = ["--batch-size", "64", "--warmup-epochs", "1", "--mixup-off-epochs", "3"]
_DIGITS = ["--dataset", "digits"] + _RECIPE
_CLUTTERED = ["--dataset", "cluttered-digits", "--image-size", "40"] + _RECIPE
_CLUTTERED64 = ["--dataset", "cluttered-digits", "--data-seed", "0"] + _RECIPE
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
# Robustness to noisy labels (the paper's Table 6): digits, a fraction of the training
# labels replaced by wrong ones (test labels true), attention and plain of the same depth.
for _noise in (0, 30, 50, 70):
    for _arm, _flags in (("attention", []), ("plain", ["--attention", "none"])):
        ARMS["noise%d-%s" % (_noise, _arm)] = (_A56 + _DIGITS + _flags + _ZERO + [
            "--label-noise", "%g" % (_noise / 100), "--data-seed", "0"])

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
    "label-noise": (["noise%d-%s" % (n, a) for n in (0, 30, 50, 70)
                     for a in ("attention", "plain")], 15, 3),
}


def plot(root, arms, seeds, path, title):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(arms), figsize=(3.2 * len(arms), 2.8), sharey=True,
                             squeeze=False)
    for ax, name in zip(axes[0], arms):
        for seed in seeds:
            rows = read_rows(os.path.join(root, name, "seed%d" % seed))
            if rows:
                ax.plot([r["epoch"] for r in rows], [r["val_top1"] for r in rows], lw=1,
                        label="seed %d" % seed)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test top-1")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def mask_scores(root, arm, seeds, image_size):
    """Inside/outside-box score per stage of each attention run's best.params (mean +- std)."""
    import statistics

    import resattn
    from resattn.data import ClutteredDigits
    from resattn.masks import score_by_stage
    import numpy as np
    per_stage = {}
    for seed in seeds:
        # Each run's data come from its own seed (resattn train passes --seed to the dataset).
        data = ClutteredDigits(train=False, seed=seed, canvas=image_size)
        x = np.stack([data[i][0].asnumpy() for i in range(len(data))])
        params = os.path.join(root, arm, "seed%d" % seed, "best.params")
        if not os.path.isfile(params):
            continue
        net = resattn.get_model("attention56_cifar", width_mult=0.0625, classes=10)
        net.load_parameters(params)
        for stage, value in score_by_stage(net, x, data.boxes, batch_size=120).items():
            per_stage.setdefault(stage, []).append(float(value))
    lines = ["| stage | mask mean inside box / outside (mean +- std over seeds) | seeds |",
             "|---|---|---:|"]
    for stage, values in per_stage.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        lines.append("| %s | %.3f +- %.3f (%s) | %d |" % (
            stage, statistics.mean(values), std, ", ".join("%.3f" % v for v in values),
            len(values)))
    return per_stage, "\n".join(lines)


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
    arms = {name: list(ARMS[name]) for name in names}
    table, text = run_study(args.out, arms, seeds, [], epochs, args.jobs, args.threads)
    print(text)
    figure = os.path.join(args.out, "%s.png" % args.experiment)
    plot(args.out, arms, seeds, figure,
         "%s: test top-1 per epoch, %d seeds" % (args.experiment, len(seeds)))
    print("figure: %s" % figure)
    with open(os.path.join(args.out, "%s.json" % args.experiment), "w") as f:
        json.dump({"arms": arms, "epochs": epochs, "seeds": seeds, "results": table}, f,
                  indent=1)
    if args.score and args.experiment == "attention-vs-plain":
        scores, score_text = mask_scores(args.out, "cluttered40-attention-zero-init", seeds, 40)
        print(score_text)
        with open(os.path.join(args.out, "mask_scores.json"), "w") as f:
            json.dump(scores, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
