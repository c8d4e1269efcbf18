"""Benchmark of `reid3dsl.eval.metrics.evaluate` against the per-query numpy reference, at the sizes of
Market-1501 (3368 x 15913) and MSMT17 (11659 x 82161), on synthetic identity-clustered 512-d features.
Input "distances": the float32 distance matrix, given whole (3.7 GiB at MSMT size); "features": query and
gallery features (cosine), distances computed chunk by chunk inside evaluate.

Each case runs in a fresh process. evaluate is timed on the whole problem (best of --repeats); the
reference (`reid3dsl.eval.reference.evaluate_reference`, one stable argsort per query) is timed on the
first 300 (Market) / 100 (MSMT) queries and scaled to all; with feature input it also computes its
distance rows, so both sides do the same work. The same subset, run through evaluate, must give the
reference's numbers (max |diff| column). Peak memory is the growth of the process's peak resident set
(Linux VmHWM, reset through /proc/self/clear_refs) over the resident set just before the call: it counts
every allocation of numpy, torch and BLAS, and not the inputs, which exist before. Prints a table and
merges it into bench/results.json under "eval".

    python -m bench.eval [--quick] [--chunk-size 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS, Figure, figure, machine, merge_results
from reid3dsl.errors import UserError, cli_main
from reid3dsl.eval.metrics import Features, GalleryDistances, evaluate
from reid3dsl.eval.reference import evaluate_reference


@dataclass(frozen=True)
class Case:
    """One benchmark problem: sizes of a public data set's test split and how distances are given."""

    name: str
    num_q: int
    num_g: int
    num_ids: int
    num_cams: int
    distractors: int  # gallery images of pid 0 (Market-1501's distractors)
    source: str  # "distances": a float32 (Q, G) matrix; "features": Features, cosine
    dim: int
    reference_queries: int
    repeats: int


def cases(quick: bool, repeats: int) -> list[Case]:
    """Market-1501 and MSMT17 test-split sizes (or a small stand-in with --quick)."""
    if quick:
        return [
            Case("quick", 300, 2000, 100, 6, 200, "distances", 512, 100, repeats),
            Case("quick", 300, 2000, 100, 6, 200, "features", 512, 100, repeats),
        ]
    return [
        Case("market1501", 3368, 15913, 750, 6, 2793, "distances", 512, 300, repeats),
        Case("market1501", 3368, 15913, 750, 6, 2793, "features", 512, 300, repeats),
        Case("msmt17", 11659, 82161, 3060, 15, 0, "distances", 512, 100, 1),  # a 3.7 GiB input matrix
        Case("msmt17", 11659, 82161, 3060, 15, 0, "features", 512, 100, 1),
    ]


def synthetic(case: Case, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, dict[str, np.ndarray]]:
    """Identity-clustered features (query `(Q, D)`, gallery `(G, D)`) and labels; noise is set so that
    rank-1 and mAP land in the range real models reach (neither trivial nor hopeless)."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    g_pids = np.concatenate([rng.integers(1, case.num_ids + 1, case.num_g - case.distractors),
                             np.zeros(case.distractors, dtype=np.int64)])
    q_pids = rng.integers(1, case.num_ids + 1, case.num_q)
    centres = torch.randn(case.num_ids + 1, case.dim, generator=gen)
    centres[0] = 0.0  # distractors: no identity, just noise
    noise = 2.1  # at 512-d: rank-1 ~0.95, mAP ~0.8, like a good Market-1501 model
    query = centres[torch.from_numpy(q_pids)] + noise * torch.randn(case.num_q, case.dim, generator=gen)
    gallery = centres[torch.from_numpy(g_pids)] + noise * torch.randn(case.num_g, case.dim, generator=gen)
    labels = {
        "q_pids": q_pids,
        "g_pids": g_pids,
        "q_camids": rng.integers(0, case.num_cams, case.num_q),
        "g_camids": rng.integers(0, case.num_cams, case.num_g),
    }
    return query, gallery, labels


def _status(field: str) -> int:
    """A VmXXX line of /proc/self/status in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise UserError(f"/proc/self/status: no {field} line (this benchmark measures memory on Linux only)")


def measured(fn: Callable[[], Any], repeats: int) -> tuple[Any, float, int]:
    """(result, best wall time in s, peak resident growth in bytes over all repeats) of `fn()`."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    base = _status("VmRSS")
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return result, best, _status("VmHWM") - base


def run_case(case: Case, chunk_size: int) -> dict[str, Any]:
    """Time and measure one case (meant to run in its own process)."""
    query, gallery, labels = synthetic(case)
    n = case.reference_queries
    sub_labels = {**labels, "q_pids": labels["q_pids"][:n], "q_camids": labels["q_camids"][:n]}
    if case.source == "distances":
        distances = GalleryDistances(gallery, "cosine")(query).numpy()
        full: Any = distances
        sub: Any = distances[:n]

        def reference() -> dict[str, Any]:
            return evaluate_reference(distances[:n], **sub_labels)
    else:
        full = Features(query, gallery, "cosine")
        sub = Features(query[:n], gallery, "cosine")

        def reference() -> dict[str, Any]:
            return evaluate_reference(GalleryDistances(gallery, "cosine")(query[:n]).numpy(), **sub_labels)

    # The reference first: memory it frees cannot flatter evaluate's peak by more than its own (small) peak.
    ref, ref_seconds, ref_peak = measured(reference, 1)
    result, seconds, peak = measured(lambda: evaluate(full, **labels, chunk_size=chunk_size), case.repeats)
    mine = evaluate(sub, **sub_labels, chunk_size=chunk_size)
    if mine["num_valid"] != ref["num_valid"]:
        raise AssertionError(f"{case.name}: num_valid {mine['num_valid']} != reference {ref['num_valid']}")
    diff = max(float(np.abs(mine["cmc"] - ref["cmc"]).max()), abs(mine["mAP"] - ref["mAP"]),
               abs(mine["mINP"] - ref["mINP"]))
    ref_scaled = ref_seconds * case.num_q / n
    return {
        **asdict(case),
        "chunk_size": chunk_size,
        "seconds": seconds,
        "peak_extra_mib": peak / 2**20,
        "reference_seconds_scaled": ref_scaled,
        "reference_peak_extra_mib_subset": ref_peak / 2**20,
        "speedup": ref_scaled / seconds,
        "max_abs_diff_vs_reference": diff,
        "rank1": float(result["cmc"][0]),
        "mAP": result["mAP"],
        "mINP": result["mINP"],
        "num_valid": result["num_valid"],
    }


def summary(rows: list[dict[str, Any]]) -> list[Figure]:
    """The benchmark table's lines: queries per second of evaluate against the reference, per case."""
    return [figure("eval", f"evaluate, {r['name']} {r['num_q']} x {r['num_g']}, {r['source']}",
                   r["num_q"] / r["seconds"], "per-query numpy reference", r["num_q"] / r["reference_seconds_scaled"],
                   "queries/s") for r in rows]


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'case':<11} {'Q x G':>14} {'input':<9} {'evaluate':>9} {'peak+':>9} {'reference':>10} "
            f"{'ref peak+':>9} {'speed-up':>8} {'max|diff|':>9}  rank-1   mAP")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['name']:<11} {r['num_q']:>6} x {r['num_g']:<6} {r['source']:<9} {r['seconds']:>8.3f}s "
            f"{r['peak_extra_mib']:>6.0f}MiB {r['reference_seconds_scaled']:>9.2f}s "
            f"{r['reference_peak_extra_mib_subset']:>6.0f}MiB {r['speedup']:>7.1f}x "
            f"{r['max_abs_diff_vs_reference']:>9.1e}  {r['rank1']:.3f}  {r['mAP']:.3f}"
        )
    return "\n".join(lines)


@cli_main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small problem instead of Market/MSMT sizes")
    parser.add_argument("--chunk-size", type=int, default=512, help="queries per chunk (eval.chunk_size)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of evaluate; the best is reported")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to merge the results into")
    args = parser.parse_args(argv)
    if args.chunk_size < 1 or args.repeats < 1:
        raise UserError("--chunk-size and --repeats: expected integers >= 1")
    info = machine()
    rows = []
    for case in cases(args.quick, args.repeats):
        # A fresh process per case: peak memory is not flattered by memory an earlier case left mapped.
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            rows.append(pool.submit(run_case, case, args.chunk_size).result())
        print(f"done: {case.name} {case.source}", file=sys.stderr, flush=True)
    print(f"evaluate vs per-query numpy reference — {info['cpu']}, {info['logical_cpus']} CPUs, "
          f"load {info['load_avg_1min_at_start']:.1f} at start; reference scaled from its subset; peak+ = "
          "growth of peak RSS during the call")
    print(table(rows))
    merge_results(args.out, "eval", {"cases": rows}, info, summary(rows))
    print(f"results: {args.out} (key 'eval')")


if __name__ == "__main__":
    main()
