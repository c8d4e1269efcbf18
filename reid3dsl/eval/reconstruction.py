"""How well the 3D stream reconstructs people: silhouette IoU, keypoint error and body-shape (β) recovery.

Pure functions of predictions and the data's truth (masks, keypoints and, where the data set knows it, each
identity's true β). β is compared modulo what a person crop cannot show: crops are normalised like detector
boxes, so overall body size is not observable from one crop (the camera scale absorbs it). `scale_direction`
is the β direction that best imitates a uniform scaling of the body; `beta_recovery` reports correlations both
raw and with that direction projected out of predicted and true β.
"""

from __future__ import annotations

import numpy as np
import torch

KEYPOINT_CROP_HEIGHT = 128  # keypoint errors are stated in pixels of a crop this high


def silhouette_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """pred (B, H, W) in [0, 1], target (B, H, W) in [0, 1] → IoU (B,) of the two thresholded at 0.5."""
    p, t = pred > 0.5, target > 0.5
    return (p & t).sum((1, 2)).float() / (p | t).sum((1, 2)).clamp_min(1).float()


def keypoint_errors(pred: torch.Tensor, target: torch.Tensor, image_height: int) -> torch.Tensor:
    """pred (B, 17, 2) and target (B, 17, 3) (x, y, confidence) in pixels of an image `image_height` high →
    distances of the visible keypoints (N,) in units of that height."""
    visible = target[..., 2] > 0
    return ((pred - target[..., :2]).norm(dim=-1) / image_height)[visible]


def scale_direction(shapedirs: torch.Tensor, template: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The unit β direction (NB,) whose blend shape best matches scaling the template about its centroid, and the
    share (R², in [0, 1]) of that scaling it reproduces. shapedirs (V, 3, NB), template (V, 3)."""
    basis = shapedirs - shapedirs.mean(dim=0, keepdim=True)  # translations are not observable either
    target = (template - template.mean(dim=0, keepdim=True)).reshape(-1)
    a = basis.reshape(-1, basis.shape[-1]).double()
    coef = torch.linalg.lstsq(a, target.double()[:, None]).solution[:, 0]
    r2 = 1.0 - float(((a @ coef - target.double()) ** 2).sum() / (target.double() ** 2).sum())
    return (coef / coef.norm()).float(), r2


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Column-wise Pearson correlation of (N, D) arrays → (D,) (0 where a column is constant)."""
    a, b = a - a.mean(0), b - b.mean(0)
    den = np.sqrt((a**2).sum(0) * (b**2).sum(0))
    return np.divide((a * b).sum(0), den, out=np.zeros(a.shape[1]), where=den > 0)


def beta_recovery(pred: np.ndarray, true: np.ndarray, pids: np.ndarray,
                  nuisance: np.ndarray | None = None) -> dict[str, float | list[float]]:
    """Predicted β (N, NB) of N images against their identities' true β (N, NB); pids (N,).

    → `r_raw` / `r` (per dimension, Pearson over images; `r` after projecting `nuisance` (NB,), a unit direction,
    out of both), their means `mean_r_raw` / `mean_r`, and `identification`: the share of images whose predicted
    β (projected) is nearest, in Euclidean distance, to their own identity's true β among all identities present
    (`chance` = 1 / identities)."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
    r_raw = _pearson(pred, true)
    if nuisance is not None:
        u = np.asarray(nuisance, np.float64)
        pred, true = pred - np.outer(pred @ u, u), true - np.outer(true @ u, u)
    r = _pearson(pred, true)
    ids, first = np.unique(pids, return_index=True)
    centres = true[first]  # one true β per identity
    nearest = ids[np.argmin(((pred[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)]
    return {"r_raw": r_raw.tolist(), "r": r.tolist(), "mean_r_raw": float(r_raw.mean()), "mean_r": float(r.mean()),
            "identification": float((nearest == pids).mean()), "chance": 1.0 / len(ids)}
