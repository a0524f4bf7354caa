"""Smoke tests of the scripts in benchmarks/: each runs as a user runs it, on tiny settings.

They check that the scripts work and report what they claim to, not speeds
(those are measured side by side, see docs/performance.md).
"""
import json
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
