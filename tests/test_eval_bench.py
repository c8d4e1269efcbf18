"""bench/eval.py runs as `python -m bench.eval`, checks itself against the reference and merges its table
into the results file without touching other benchmarks' entries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_eval_benchmark_agrees_with_the_reference_and_merges_under_its_key(tmp_path) -> None:
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"train": {"kept": True}}))
    run = subprocess.run(
        [sys.executable, "-m", "bench.eval", "--quick", "--repeats", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "speed-up" in run.stdout and "quick" in run.stdout
    results = json.loads(out.read_text())
    assert results["train"] == {"kept": True}
    cases = results["eval"]["cases"]
    assert {c["source"] for c in cases} == {"distances", "features"}
    for case in cases:
        assert case["max_abs_diff_vs_reference"] < 1e-6
        assert case["seconds"] > 0 and case["peak_extra_mib"] >= 0
    assert results["eval"]["machine"]["logical_cpus"] >= 1


def test_eval_benchmark_rejects_a_bad_option_in_one_line(tmp_path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.eval", "--quick", "--repeats", "0", "--out", str(tmp_path / "r.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "--repeats" in run.stderr
