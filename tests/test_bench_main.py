"""`python -m bench` prints one table of every benchmark's figures from the results file: value, named baseline,
ratio, target and whether it was met, then the notes and where each benchmark was measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MACHINE = {"cpu": "Test CPU", "logical_cpus": 2, "simd": ["avx2"], "torch": "2.12.1", "load_avg_1min_at_start": 0.5}


def _figure(bench: str, name: str, value: float, baseline_value: float, target: str, met: bool | None,
            note: str = "") -> dict:
    return {"bench": bench, "name": name, "value": value, "baseline": f"{bench} baseline",
            "baseline_value": baseline_value, "unit": "samples/s", "ratio": value / baseline_value, "target": target,
            "met": met, "note": note}


def test_bench_table_lists_every_figure_once_under_one_header(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    out.write_text(json.dumps({
        "data": {"date": "2026-01-01", "machine": MACHINE, "summary": [
            _figure("data", "reader", 900.0, 1000.0, ">= 0.8", True),
            _figure("data", "loader", 500.0, 1000.0, ">= 1", False, note="tar parsing dominates")]},
        "scaling": {"date": "2026-01-02", "machine": MACHINE, "summary": [
            _figure("scaling", "2 workers", 170.0, 100.0, ">= 1.6", True)]},
        "eval": {"date": "2026-01-03", "machine": MACHINE, "cases": []},
    }))
    run = subprocess.run([sys.executable, "-m", "bench", "--table", "--only", "scaling", "data", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| bench ")]
    assert sum(line.startswith("| bench ") for line in lines) == 1
    assert [r.split("|")[2].strip() for r in rows] == ["2 workers", "reader", "loader"]
    assert rows[0].split("|")[6].strip() == "1.70x" and rows[0].split("|")[8].strip() == "yes"
    assert rows[2].split("|")[8].strip() == "NO"
    assert any("tar parsing dominates" in line for line in lines)
    assert sum(line.startswith("- scaling: measured 2026-01-02 on Test CPU") for line in lines) == 1


def test_bench_table_without_a_results_file_says_so_in_one_line(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "bench", "--table", "--out", str(tmp_path / "none.json")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and "none.json" in run.stderr
