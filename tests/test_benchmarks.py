"""Smoke tests of the scripts in benchmarks/: each runs as a user runs it, on tiny settings.

They check that the scripts work and report what they claim to, not speeds
(those are measured side by side, see docs/performance.md).
"""
import json
import math
import os
import subprocess
import sys

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "benchmarks")


def run(script, *argv, check=True):
    proc = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script)] + list(argv),
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def table_rows(stdout):
    """The first cell of every data row of the Markdown tables in ``stdout``."""
    return [line.split("|")[1].strip() for line in stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| ---")]


def test_bench_throughput_quick(tmp_path):
    out = tmp_path / "bench.json"
    cases = ["resattn:train", "resattn:infer", "resattn-fused:infer"]
    proc = run("bench_throughput.py", "--quick", "--only", ",".join(cases), "--json", str(out))
    assert set(cases) <= set(table_rows(proc.stdout))
    result = json.loads(out.read_text())
    assert [row["case"] for row in result["rows"]] == cases
    for row in result["rows"]:
        assert row["img_s"] > 0 and len(row["runs"]) == 1 and row["share_of_peak"] > 0
    assert result["width_mult"] == 0.25 and result["peak_gflops"] > 0


def test_bench_throughput_names_a_bad_case():
    proc = run("bench_throughput.py", "--only", "resattn:train,tensorflow:train", check=False)
    assert proc.returncode == 2
    assert "unknown --only entries ['tensorflow:train']" in proc.stderr
    assert "valid: resattn:train" in proc.stderr


@pytest.mark.parametrize("mode", ["train", "fused"])
def test_ablation_blocks(mode):
    proc = run("ablation_blocks.py", "--mode", mode, "--width-mult", "0.25", "--rounds", "1",
               "--iters", "1")
    assert table_rows(proc.stdout) == ["graph", "before", "sigmoid", "now"]


def test_profile_ops_lists_operators():
    proc = run("profile_ops.py", "--mode", "infer", "--steps", "1", "--top", "4")
    rows = table_rows(proc.stdout)
    assert rows[0] == "operator" and len(rows) == 5
    assert any("Convolution" in row for row in rows[1:])
    # It once pointed MXNet's profiler at os.devnull, which MXNet replaced by a regular file.
    import stat
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


TINY_TRAIN = ("--model attention56_cifar --width-mult 0.0625 --dataset digits --subset 64 "
              "--batch-size 32 --warmup-epochs 1 --mixup-off-epochs 1")


def test_seed_study_runs_every_arm_and_seed_and_counts_failures(tmp_path):
    out = tmp_path / "study"
    proc = run("seed_study.py", "--seeds", "2", "--epochs", "2", "--base", TINY_TRAIN,
               "--arm", "attention=", "--arm", "plain=--attention none", "--out", str(out))
    assert proc.stdout.startswith("machine: ")
    assert table_rows(proc.stdout) == ["arm", "attention", "plain"]
    summary = json.loads((out / "summary.json").read_text())
    for arm in ("attention", "plain"):
        runs = summary["results"][arm]["runs"]
        assert sorted(r["seed"] for r in runs) == [0, 1]
        # 64 images, 2 epochs: whatever the verdict, it is the documented rule's.
        for r in runs:
            rows = [json.loads(line) for line in
                    (out / arm / ("seed%d" % r["seed"]) / "metrics.jsonl").read_text().split("\n")
                    if line]
            failed = rows[-1]["val_top1"] < 0.19 or rows[-1]["train_loss"] > 0.9 * 2.302585
            assert r["status"] == ("failed" if failed else "ok")
    # Finished runs are reused: the report alone, and a second study, train nothing.
    again = run("seed_study.py", "--seeds", "2", "--epochs", "2", "--base", TINY_TRAIN,
                "--arm", "attention=", "--arm", "plain=--attention none", "--out", str(out))
    assert "exit" not in again.stdout and table_rows(again.stdout) == table_rows(proc.stdout)


def _seed_study():
    sys.path.insert(0, BENCHMARKS)
    try:
        import seed_study
    finally:
        sys.path.remove(BENCHMARKS)
    return seed_study


def test_verdict_judges_noisy_label_runs_against_the_loss_their_labels_allow(tmp_path):
    seed_study = _seed_study()
    # The entropy of a label given its class, by its definition: the true class with
    # probability 1 - f, each of the 9 others with f / 9.
    for f in (0.3, 0.5, 0.7):
        probs = [1 - f] + [f / 9] * 9
        assert seed_study.noisy_label_loss(10, f) == pytest.approx(
            -sum(p * math.log(p) for p in probs))
    assert seed_study.noisy_label_loss(10, 0) == 0
    # 70% wrong labels: a network that knows the digits (test top-1 0.8) has a training
    # loss of 2.2, above 0.9 ln 10 = 2.07 but far from a uniform guess's 2.30.
    rows = [{"epoch": 1, "train_loss": 2.2, "val_loss": 1.0, "val_top1": 0.8,
             "time_s": 1.0}]
    assert seed_study.verdict(rows, 10, 1)[0] == "failed"
    assert seed_study.verdict(rows, 10, 1, label_noise=0.7)[0] == "ok"
    rows[0]["train_loss"] = 2.295  # within 10% of the way from 2.30 down to 2.15
    assert seed_study.verdict(rows, 10, 1, label_noise=0.7)[0] == "failed"
    # run_verdict reads the noise from the run's config.json.
    d = tmp_path / "run"
    d.mkdir()
    rows[0]["train_loss"] = 2.2
    (d / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert seed_study.run_verdict(str(d), 10, 1)[0] == "failed"
    (d / "config.json").write_text(json.dumps({"label_noise": 0.7}))
    assert seed_study.run_verdict(str(d), 10, 1)[0] == "ok"
    for bad in ("{not json", "[0.7]", '{"label_noise": "lots"}'):
        (d / "config.json").write_text(bad)
        with pytest.raises(SystemExit, match="config.json: cannot read its label_noise"):
            seed_study.run_verdict(str(d), 10, 1)


def test_seed_study_fills_in_root_and_seed_in_an_arms_flags(tmp_path):
    out = tmp_path / "study"
    proc = run("seed_study.py", "--seeds", "1", "--first-seed", "3", "--epochs", "2",
               "--base", TINY_TRAIN, "--arm",
               "second=--finetune {root}/first/seed{seed}/x.params", "--out", str(out))
    assert "second seed 3: exit 2" in proc.stdout
    log = (out / "second" / "seed3" / "stdout.txt").read_text()
    assert "--finetune %s/first/seed3/x.params: no such file" % out in log


def test_ablations_report_and_figure_from_finished_runs(tmp_path):
    # Runs as the study leaves them (metrics.jsonl of every arm and seed): nothing trains.
    out = tmp_path / "study"
    for arm, top1 in (("attention-9ep", 0.10), ("attention-zero-init-9ep", 0.9),
                      ("plain-9ep", 0.92)):
        for seed in (0, 1):
            d = out / arm / ("seed%d" % seed)
            d.mkdir(parents=True)
            rows = [{"epoch": e, "train_loss": 2.31 if top1 < 0.2 else 1.0 / e,
                     "val_loss": 2.3, "val_top1": top1 + 0.01 * seed, "val_top5": 0.5,
                     "time_s": 1.0} for e in range(1, 10)]
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run("ablations.py", "demo-9-epochs", "--seeds", "2", "--out", str(out))
    assert table_rows(proc.stdout) == ["arm", "attention-9ep", "attention-zero-init-9ep",
                                       "plain-9ep"]
    assert "| attention-9ep | 2 | 2 (seeds 0,1) |" in proc.stdout
    assert (out / "demo-9-epochs.png").read_bytes()[:4] == b"\x89PNG"
    result = json.loads((out / "demo-9-epochs.json").read_text())
    assert result["results"]["attention-zero-init-9ep"]["failed_seeds"] == []


def _fake_run(d, top1, loss, epochs):
    d.mkdir(parents=True)
    rows = [{"epoch": e, "train_loss": loss + 1.0 / e - 1.0 / epochs, "val_loss": 1.0,
             "val_top1": top1, "val_top5": 0.9, "time_s": 1.0} for e in range(1, epochs + 1)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_label_noise_pairs_converged_runs_and_draws_top1_against_noise(tmp_path):
    out = tmp_path / "study"
    top1 = {"attention": [0.90, 0.86, 0.95], "plain": [0.88, 0.85, 0.80]}
    for level in (0, 30, 50, 70):
        for arm in ("attention", "plain"):
            for seed in range(3):
                # plain seed 2 at 70%: a final loss 30% above its arm's best, not converged.
                loss = 1.3 if (level, arm, seed) == (70, "plain", 2) else 1.0 + 0.02 * seed
                _fake_run(out / ("noise%d-%s" % (level, arm)) / ("seed%d" % seed),
                          top1[arm][seed] - level / 1000, loss, 3)
    proc = run("ablations.py", "label-noise", "--epochs", "3", "--out", str(out))
    assert "exit" not in proc.stdout  # nothing trained
    table = json.loads((out / "label-noise-analysis.json").read_text())
    # Student's t for 3 pairs (2 degrees of freedom: 4.3027) and 2 pairs (12.706), by hand.
    diffs = [0.02, 0.01, 0.15]
    mean = sum(diffs) / 3
    sd = (sum((d - mean) ** 2 for d in diffs) / 2) ** 0.5
    assert table["0"]["mean"] == pytest.approx(mean)
    assert table["0"]["ci95"] == pytest.approx(4.302653 * sd / 3 ** 0.5, rel=1e-5)
    assert table["70"]["seeds"] == [0, 1]
    assert table["70"]["ci95"] == pytest.approx(12.7062 * (0.01 / 2 ** 0.5) / 2 ** 0.5,
                                                rel=1e-4)
    assert "noise70-plain seed 2: not converged: final training loss 1.300" in proc.stdout
    assert "| 70% |" in proc.stdout and "+0.0150 +-" in proc.stdout
    assert (out / "label-noise-top1.png").read_bytes()[:4] == b"\x89PNG"


def test_attention_vs_plain_64_phase2_runs_after_its_first_phase_and_compares_itself(
        tmp_path):
    # Both phases finished (logs only): nothing trains, and the comparison is phase 2's.
    out = tmp_path / "study"
    for seed in range(3):
        for arm, top1 in (("attention", 0.95), ("plain", 0.94)):
            _fake_run(out / ("cluttered64-%s" % arm) / ("seed%d" % seed), 0.5, 1.0, 40)
            _fake_run(out / ("cluttered64-%s-phase2" % arm) / ("seed%d" % seed),
                      top1 + 0.01 * seed * (arm == "attention"), 0.1, 20)
    proc = run("ablations.py", "attention-vs-plain-64-phase2", "--seeds", "3", "--out",
               str(out))
    assert "exit" not in proc.stdout
    assert "first attention-vs-plain-64 (40 epochs)" in proc.stdout
    result = json.loads((out / "attention-vs-plain-64-phase2-analysis.json").read_text())
    comparison = result["comparison"]
    assert comparison["first"] == "cluttered64-attention-phase2"
    assert comparison["seeds"] == [0, 1, 2]
    assert comparison["mean"] == pytest.approx(0.02)


def test_attention_vs_plain_64_scores_masks_against_the_plain_trunk(tmp_path):
    out = tmp_path / "study"
    for arm, flags in (("cluttered64-attention", []),
                       ("cluttered64-plain", ["--attention", "none"])):
        subprocess.run([sys.executable, "-m", "resattn", "train", "--model", "attention56_cifar",
                        "--width-mult", "0.0625", "--dataset", "cluttered-digits",
                        "--data-seed", "0", "--subset", "64", "--batch-size", "32",
                        "--epochs", "1", "--no-progress", "--out",
                        str(out / arm / "seed0")] + flags, check=True, capture_output=True,
                       timeout=600)
        # One epoch on 64 images ends near chance, which the study leaves out; the
        # scores and figures need runs it keeps, so the log says it converged.
        (out / arm / "seed0" / "metrics.jsonl").write_text(json.dumps(
            {"epoch": 1, "train_loss": 0.5, "val_loss": 0.6, "val_top1": 0.8,
             "val_top5": 1.0, "time_s": 1.0}) + "\n")
    proc = run("ablations.py", "attention-vs-plain-64", "--seeds", "1", "--epochs", "1",
               "--out", str(out))
    assert "exit" not in proc.stdout
    result = json.loads((out / "attention-vs-plain-64-analysis.json").read_text())
    assert result["comparison"]["seeds"] == [0]
    scores = result["box_scores"]
    assert sorted(scores["cluttered64-attention"]["0"]) == ["mask_auc", "mask_ratio",
                                                          "trunk_auc", "trunk_ratio"]
    assert sorted(scores["cluttered64-plain"]["0"]) == ["trunk_auc", "trunk_ratio"]
    for by_stage in scores["cluttered64-plain"]["0"].values():
        assert list(by_stage) == ["stage1", "stage2", "stage3"]
    for stage, value in scores["cluttered64-plain"]["0"]["trunk_auc"].items():
        assert 0 <= value <= 1
    figures = result["mask_figures"]
    assert figures["best"]["seed"] == figures["worst"]["seed"] == 0
    assert open(figures["best"]["path"], "rb").read(4) == b"\x89PNG"
    assert "| |T| | auc | stage3 |" in proc.stdout.replace("cluttered64-plain ", "")


def test_diagnose_training_probes_the_first_steps(tmp_path):
    out = tmp_path / "diag"
    run("diagnose_training.py", "--epochs", "2", "--subset", "64", "--first-steps", "2",
        "--out", str(out))
    rows = [json.loads(line) for line in (out / "probes.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows][:2] == [1, 2]
    for key in ("grad_norm", "param_norm", "loss_train_mode", "loss_eval_mode",
                "bn_worst_var_ratio"):
        assert rows[0][key] > 0
    modules = rows[0]["modules_eval_mode"]
    assert len(modules) == 3 and all(0 < m["mask_mean"] < 1 for m in modules.values())


def test_profile_threads_compares_thread_counts_and_wait_policies(tmp_path):
    proc = run("profile_threads.py", "--nets", "tiny", "--modes", "infer", "--steps", "2",
               "--json", str(tmp_path / "t.json"))
    result = json.loads((tmp_path / "t.json").read_text())
    assert {(r["threads"], r["policy"]) for r in result["results"]} >= {(1, "default"),
                                                                         (1, "PASSIVE")}
    assert all(r["img_per_s"] > 0 for r in result["results"])
    assert "tiny" in table_rows(proc.stdout)


def test_health_replay_scores_rules_on_finished_runs(tmp_path):
    """Runs as training leaves them: a healthy one with an early spike, a failed one."""
    def write(name, rows, warmup=1):
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"epochs": len(rows),
                                                   "warmup_epochs": warmup}))
        (d / "metrics.jsonl").write_text("".join(json.dumps(dict(
            epoch=i + 1, train_loss=t, val_loss=v, val_top1=a, time_s=1.0)) + "\n"
            for i, (t, v, a) in enumerate(rows)))
    write("healthy", [(2.3, 19.0, 0.10), (2.2, 2.0, 0.15), (1.0, 0.5, 0.8), (0.5, 0.3, 0.9),
                      (0.4, 0.2, 0.95)])
    write("failed", [(2.31, 2.3, 0.10)] * 5)
    proc = run("health_replay.py", str(tmp_path / "runs"), "--grace", "0,2", "--fraction", "0",
               "--persist", "1,2")
    assert proc.stdout.startswith("machine: ")
    assert "2 runs: 1 failed, 1 healthy" in proc.stdout
    rows = {(line.split()[0], line.split()[2]): line.split()
            for line in proc.stdout.splitlines() if line.split()[:1] in (["0"], ["2"])}
    assert rows[("0", "1")][3:5] == ["0.50", "1.00"]  # the spike warns: a false alarm
    assert rows[("2", "2")][3:5] == ["1.00", "1.00"]  # grace and persistence: only the failure
    default = run("health_replay.py", str(tmp_path / "runs"))
    assert "<- the library's rule" in default.stdout


def test_predict_memory_reports_both_peaks():
    proc = run("predict_memory.py", "--images", "40")
    assert proc.stdout.startswith("machine: ")
    assert "difference:" in proc.stdout and "for 39 more images" in proc.stdout


def test_bench_import_order_gives_each_order_its_ratio():
    proc = run("bench_import_order.py", "--rounds", "1", "--iters", "1")
    assert proc.stdout.startswith("machine: ")
    rows = table_rows(proc.stdout)
    assert rows[1:] == ["OMP_NUM_THREADS by hand", "resattn, then MXNet", "MXNet, then resattn",
                        "MXNet, an operator, then resattn", "MXNet alone (its default)"]
    assert "| OMP_NUM_THREADS by hand |" in proc.stdout and "| 1.00x |" in proc.stdout
