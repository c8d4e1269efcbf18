"""Reconstruction metrics: β recovery, IoU and keypoint error are right on constructed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reid3dsl.eval.reconstruction import beta_recovery, keypoint_errors, scale_direction, silhouette_iou


def _people(n_ids: int = 20, per_id: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    betas = rng.normal(size=(n_ids, 10))
    pids = np.repeat(np.arange(1, n_ids + 1), per_id)
    return betas[pids - 1], pids


def test_perfect_predictions_give_r_one_and_full_identification() -> None:
    true, pids = _people()
    u = np.eye(10)[0]
    res = beta_recovery(true.copy(), true, pids, u)
    assert res["mean_r_raw"] == pytest.approx(1.0)
    assert res["r"][1:] == pytest.approx([1.0] * 9)  # the projected-out direction has no variance left: r 0
    assert res["identification"] == 1.0 and res["chance"] == pytest.approx(1 / 20)


def test_predictions_off_only_along_the_nuisance_direction_count_as_right() -> None:
    true, pids = _people(seed=1)
    u = np.ones(10) / np.sqrt(10)
    pred = true + np.outer(np.random.default_rng(2).normal(scale=3.0, size=len(true)), u)
    res = beta_recovery(pred, true, pids, u)
    assert res["mean_r"] == pytest.approx(np.mean(res["r"]))
    assert min(res["r"]) > 0.999 and res["identification"] == 1.0
    assert res["mean_r_raw"] < 0.9  # raw β sees the stature-like error


def test_unrelated_predictions_are_near_chance() -> None:
    true, pids = _people(n_ids=40, per_id=10, seed=3)
    pred = np.random.default_rng(4).normal(size=true.shape)
    res = beta_recovery(pred, true, pids)
    assert abs(res["mean_r_raw"]) < 0.1 and res["identification"] < 0.1


def test_scale_direction_recovers_a_pure_scaling_blend_shape() -> None:
    template = torch.randn(50, 3)
    shapedirs = torch.randn(50, 3, 4) * 0.01
    shapedirs[..., 2] = 0.1 * (template - template.mean(0))
    u, r2 = scale_direction(shapedirs, template)
    assert abs(float(u[2])) > 0.99 and r2 > 0.99


def test_iou_and_keypoint_error_on_known_shapes() -> None:
    a = torch.zeros(1, 8, 4)
    a[0, :4] = 1
    b = torch.zeros(1, 8, 4)
    b[0, 2:6] = 1
    assert float(silhouette_iou(a, b)[0]) == pytest.approx(8 / 24)
    target = torch.tensor([[[10.0, 20.0, 1.0], [0.0, 0.0, 0.0]]])
    pred = torch.tensor([[[13.0, 24.0], [50.0, 50.0]]])
    assert keypoint_errors(pred, target, 100).tolist() == pytest.approx([0.05])  # 5 px of 100; missing one left out
