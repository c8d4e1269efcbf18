"""`python -m bench` runs the data benchmark: every loader (shards and files, local and S3) reads the same tensors
from the same bytes, the figures are measured against their named baselines, merged under "data", and stdout holds
one table."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench/ runs from the checkout (python -m bench); it is not an installed package
from bench.data import TOLERANCE  # noqa: E402


def test_make_bench_data_reads_the_same_tensors_from_every_loader_and_prints_one_table(
    toy_shards: Callable[..., str], standin_dir: str, tmp_path: Path
) -> None:
    root = toy_shards(tmp_path / "toy", ids=8, per_id=6, splits=("train", "query", "gallery"), size=(64, 32))
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"eval": {"kept": True}}))
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--only", "data", "--out", str(out),
         "--config", "configs/smoke.yaml", "--set", f"data.root={root}", "--set", "data.synthesize=false",
         "--set", f"body.standin_dir={standin_dir}", "--set", "data.loader_workers=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["eval"] == {"kept": True}
    data = results["data"]
    agreement = data["agreement"]
    assert agreement["samples"] == {"shards_local": 144, "files_local": 144, "shards_s3": 144, "files_s3": 144}
    assert agreement["same_keys"] and agreement["max_abs_diff"] <= TOLERANCE
    assert data["samples"] == 144 and data["loader_workers"] == 1
    figures = data["summary"]
    assert [f["baseline"] for f in figures] == [
        "file-per-image loader (PIL + Dataset), local", "shard loader, local", "one GET per image + mask, S3",
        "decoding the same bytes in memory"]
    for f in figures:
        assert f["value"] > 0 and f["baseline_value"] > 0
        assert abs(f["ratio"] - f["value"] / f["baseline_value"]) < 1e-9
        assert f["met"] == (f["ratio"] >= float(f["target"].split()[1]))
    lines = run.stdout.splitlines()
    assert sum(line.startswith("| bench ") for line in lines) == 1, run.stdout
    assert sum(line.startswith("| data ") for line in lines) == 4, run.stdout


def test_data_benchmark_rejects_a_bad_option_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "bench.data", "--repeats", "0", "--out", str(tmp_path / "r.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "--repeats" in run.stderr
