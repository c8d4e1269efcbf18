"""What every benchmark shares: the machine description (the library's), timing in rounds, the results file
and the one table.

Each benchmark measures its figures against a named baseline in the same run and stores, under its own key
of bench/results.json, the details plus a `summary`: a list of `Figure`s (value, baseline, ratio, target,
whether it was met). `python -m bench` prints the summaries of all benchmarks as one table (`table`).
"""

from __future__ import annotations

import datetime
import json
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from reid3dsl.precision import machine

__all__ = ["machine"]  # re-exported: the benchmarks describe their machine as the library's runners do
RESULTS = Path(__file__).with_name("results.json")



def load_avg() -> float:
    """The 1-minute load average (other processes share these cores: every figure says what it was)."""
    return os.getloadavg()[0]


@dataclass
class Figure:
    """One line of the benchmark table: `value` of `name` against `baseline_value` of the named `baseline`, both
    measured in the same run, in `unit`; `ratio` = value / baseline_value, and `target` says which way is good."""

    bench: str
    name: str
    value: float
    baseline: str
    baseline_value: float
    unit: str
    ratio: float
    target: str  # e.g. ">= 0.8", "<= 2.5"; "" where the issue sets none
    met: bool | None
    note: str = ""


def figure(bench: str, name: str, value: float, baseline: str, baseline_value: float, unit: str,
           target: tuple[str, float] | None = None, note: str = "") -> Figure:
    """A `Figure` with ratio = value / baseline_value, checked against `target` = (">=" or "<=", threshold)."""
    ratio = value / baseline_value if baseline_value else float("nan")
    met = None
    text = ""
    if target is not None:
        op, threshold = target
        met = ratio >= threshold if op == ">=" else ratio <= threshold
        text = f"{op} {threshold:g}"
    return Figure(bench, name, value, baseline, baseline_value, unit, ratio, text, met, note)


def rounds(fns: Mapping[str, Callable[[], float]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run every measurement `fn()` (returning one number, e.g. samples/s) `warmup + repeats` times, one of each per
    round, and keep the last `repeats` per name. Interleaving the candidates round by round spreads the load that
    other processes put on the machine evenly over them, which back-to-back blocks would not."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            value = fn()
            if i >= warmup:
                out[name].append(value)
    return out


def median(values: list[float]) -> float:
    return statistics.median(values)


def rate(count_fn: Callable[[], int]) -> float:
    """Items per second of one call of `count_fn` (which returns how many items it processed)."""
    t0 = time.perf_counter()
    n = count_fn()
    return n / (time.perf_counter() - t0)


def merge_results(out: Path, key: str, entry: Mapping[str, Any], info: Mapping[str, Any],
                  summary: list[Figure]) -> None:
    """Write `entry` (+ date, machine and summary figures) under `key` of the JSON file `out`, keeping the other
    benchmarks' keys as they are."""
    results = json.loads(out.read_text()) if out.is_file() else {}
    results[key] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": dict(info),
        **entry,
        "summary": [asdict(f) for f in summary],
    }
    out.write_text(json.dumps(results, indent=2) + "\n")


def _num(x: float) -> str:
    if x != x:  # NaN
        return "—"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def table(figures: list[Figure]) -> str:
    """The benchmark table (plain text, also valid as the body of a Markdown table)."""
    head = ["bench", "figure", "value", "baseline", "baseline value", "ratio", "target", "met"]
    rows = [head]
    for f in figures:
        met = "—" if f.met is None else ("yes" if f.met else "NO")
        rows.append([f.bench, f.name, f"{_num(f.value)} {f.unit}", f.baseline, f"{_num(f.baseline_value)} {f.unit}",
                     f"{f.ratio:.2f}x", f.target or "—", met])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def figures_of(results: Mapping[str, Any], keys: list[str]) -> list[Figure]:
    """The summary figures stored under `keys` of a results document, in that order (absent keys are skipped)."""
    return [Figure(**f) for k in keys if k in results for f in results[k].get("summary", [])]
