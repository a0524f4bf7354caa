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
