"""bench/scaling.py runs the main job with 1 and 2 Ray workers at the same per-worker batch and reports the second
epoch's samples/s of each and their ratio."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def test_scaling_benchmark_runs_the_job_with_one_and_two_workers_at_equal_per_worker_batch(
    toy_shards: Callable[..., str], standin_dir: str, tmp_path: Path
) -> None:
    root = toy_shards(tmp_path / "toy", ids=8, per_id=6, splits=("train", "query", "gallery"), size=(64, 32))
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.scaling", "--quick", "--out", str(out), "--config", "configs/smoke.yaml",
         "--set", f"data.root={root}", "--set", "data.synthesize=false", "--set", f"body.standin_dir={standin_dir}",
         "--set", "eval.vis_queries=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())["scaling"]
    assert result["per_worker_batch"] == 4 and result["steps_per_epoch"] == 2
    runs = result["runs"]
    for workers in ("1", "2"):
        assert runs[workers]["epochs"] == 2 and runs[workers]["steps"] == 4, runs
        assert runs[workers]["samples_per_s"] > 0 and runs[workers]["skipped_samples"] == 0
    (fig,) = result["summary"]
    assert fig["baseline"] == "1 Ray worker" and fig["target"] == ">= 1.6"
    assert fig["value"] == runs["2"]["samples_per_s"] and fig["baseline_value"] == runs["1"]["samples_per_s"]
    assert result["efficiency"] == pytest.approx(fig["ratio"] / 2)
    assert "| scaling " in run.stdout and "scaling efficiency" in run.stdout
