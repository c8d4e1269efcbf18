"""The straightforward per-query reference of the ReID metrics: the definition the fast kernel is held to.

One query at a time, in numpy: a stable argsort of the query's distance row, junk removed by the
protocol's rule, then CMC, AP and INP read off the ranked match list, as the Market-1501 evaluation
code does it. It is slow on purpose (clarity over speed); tests compare `reid3dsl.eval.metrics.evaluate`
with it and bench/eval.py times it as the baseline. It shares no code with the fast kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def evaluate_reference(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    q_clothes: np.ndarray | None = None,
    g_clothes: np.ndarray | None = None,
    mode: str = "standard",
    max_rank: int = 50,
) -> dict[str, Any]:
    """Per-query CMC / mAP / mINP on a full distance matrix `(Q, G)`; same contract as `metrics.evaluate`.

    Rules for a gallery item with the query's pid (items of other pids are always kept as negatives):
    standard: good if other camera, junk if same camera. cc: good if other camera and other clothes,
    junk if same camera or same clothes. sc: good if other camera and same clothes, junk if same camera
    or other clothes. Queries without a good item are skipped.
    """
    distmat = np.asarray(distmat)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    cmc_sum = np.zeros(max_rank, dtype=np.float64)
    ap_sum = inp_sum = 0.0
    num_valid = 0
    for i in range(distmat.shape[0]):
        order = np.argsort(distmat[i], kind="stable")
        same_pid = g_pids[order] == q_pids[i]
        same_cam = g_camids[order] == q_camids[i]
        if mode == "standard":
            junk = same_pid & same_cam
        else:
            same_clothes = np.asarray(g_clothes)[order] == np.asarray(q_clothes)[i]
            if mode == "cc":
                junk = same_pid & (same_cam | same_clothes)
            elif mode == "sc":
                junk = same_pid & (same_cam | ~same_clothes)
            else:
                raise ValueError(f"mode {mode!r}")
        matches = same_pid[~junk]
        if not matches.any():
            continue
        num_valid += 1
        hits = matches.cumsum()
        cmc = np.minimum(hits, 1)
        if cmc.size < max_rank:  # fewer kept items than max_rank: the curve stays at its last value
            cmc = np.concatenate([cmc, np.full(max_rank - cmc.size, cmc[-1])])
        cmc_sum += cmc[:max_rank]
        positions = np.flatnonzero(matches)
        ap_sum += float(np.mean(hits[positions] / (positions + 1.0)))
        inp_sum += float(hits[positions[-1]] / (positions[-1] + 1.0))
    if num_valid == 0:
        return {"cmc": np.zeros(max_rank), "mAP": 0.0, "mINP": 0.0, "num_valid": 0}
    return {
        "cmc": cmc_sum / num_valid,
        "mAP": ap_sum / num_valid,
        "mINP": inp_sum / num_valid,
        "num_valid": num_valid,
    }
