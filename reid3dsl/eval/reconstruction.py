"""How well the 3D stream reconstructs people: silhouette IoU, keypoint error and body-shape (β) recovery.

The metrics are functions of predictions and the data's truth (masks, keypoints and, where the data set knows
it, each identity's true β). β is compared modulo what a person crop cannot show: crops are normalised like
detector boxes, so overall body size is not observable from one crop (the camera scale absorbs it).
`scale_direction` is the β direction that best imitates a uniform scaling of the body; `beta_recovery` reports
correlations both raw and with that direction projected out of predicted and true β.

`predict_3d`, `quality_sums`/`quality_figures` and `shape_recovery` measure a model on a split — the training
job's evaluator and the eval CLI both report them as `eval/3d/*`; `format_figures` prints them.
`beta_visibility` measures the body model itself: how many pixels of a detector-framed crop each β dimension
changes, i.e. how much a silhouette can tell about it at a given render size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from reid3dsl.body.render import SHARP_BLUR_PX
from reid3dsl.config import Config
from reid3dsl.models.threedsl import ThreeDSL
from reid3dsl.precision import Precision

KEYPOINT_CROP_HEIGHT = 128  # keypoint errors are stated in pixels of a crop this high
QUALITY_IMAGES = 64  # silhouette IoU and keypoint error are measured on this many query images (per rank)


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


def beta_visibility(cfg: Config, sizes: list[tuple[int, int]], people: int = 16,
                    seed: int = 0) -> dict[str, Any]:
    """For `people` walking poses of the body model of `cfg.body` (any heading, framed like detector crops that
    the body fills to 86 %, as the embedded data set frames them), the mask pixels that moving each β dimension
    from 0 to +1 changes, per render size (H, W): {"HxW": {"changed_px": [per dimension], "body_px": mean mask
    area}}. Stature (mostly β_0 for the stand-in) changes little: the framing removes it."""
    from reid3dsl.body.prior import StandinPrior, upright_orientation
    from reid3dsl.body.render import TexturedRenderer
    from reid3dsl.body.smpld import load_body_model
    from reid3dsl.data.synth.renderer import detector_framing

    body = load_body_model(cfg.body)
    renderer = TexturedRenderer(cfg.body)
    g = torch.Generator().manual_seed(seed)
    pose = StandinPrior(body.num_betas).sample(people, g)[0].clone()
    pose[:, 0] = upright_orientation(torch.rand(people, generator=g) * 2 * np.pi)

    def masks(betas: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        verts = body(betas, pose).vertices
        cam_t = detector_framing(verts, renderer.focal, size[0], torch.full((people,), 0.86), torch.zeros(people, 2))
        return renderer.render(verts, body.faces, torch.ones_like(verts), cam_t, size).mask

    out: dict[str, Any] = {}
    with torch.no_grad():
        for size in sizes:
            base = masks(torch.zeros(people, body.num_betas), size)
            changed = []
            for k in range(body.num_betas):
                betas = torch.zeros(people, body.num_betas)
                betas[:, k] = 1.0
                changed.append(float((masks(betas, size) ^ base).float().sum((1, 2)).mean()))
            out[f"{size[0]}x{size[1]}"] = {"changed_px": changed, "body_px": float(base.float().sum((1, 2)).mean())}
    return out


def predict_3d(model: ThreeDSL, precision: Precision, batch: dict[str, Any], size: tuple[int, int],
               device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The 3D stream's sharp silhouettes (B, *size) for `batch` and its `project()` output (keypoints in
    shape-image pixels), in eval mode."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), precision.autocast():
        out_shape = model(batch["image"].to(device), batch["shape_image"].to(device))["shape"]
    model.train(was_training)
    with torch.no_grad():
        projected = model.project(out_shape)
        sil = model.silhouettes(projected, size, SHARP_BLUR_PX)
    return sil, projected


def quality_sums(model: ThreeDSL, cfg: Config, split: str, rank: int, world_size: int, device: torch.device,
                 precision: Precision) -> torch.Tensor:
    """Over up to QUALITY_IMAGES images of `split` read by this rank: (IoU sum, masks, keypoint error sum in
    units of the image height, visible keypoints) float64 — summed over ranks by the caller, then
    `quality_figures`. Silhouettes are rendered at the mask resolution (`data.sil_*`) and thresholded at 0.5."""
    from reid3dsl.data.pipeline import eval_batches

    sums = torch.zeros(4, dtype=torch.float64)
    sil_size = (cfg.data.sil_height, cfg.data.sil_width)
    seen = 0
    for batch in eval_batches(cfg, split, rank, world_size, 32):
        if seen >= QUALITY_IMAGES:
            break
        seen += len(batch["key"])
        sil, projected = predict_3d(model, precision, batch, sil_size, device)
        has = batch["has_mask"]
        sums[0] += silhouette_iou(sil[has].cpu(), batch["mask"][has]).sum().item()
        sums[1] += int(has.sum())
        err = keypoint_errors(projected["keypoints_2d"].cpu(), batch["keypoints"], cfg.data.shape_height)
        sums[2] += err.sum().item()
        sums[3] += err.numel()
    return sums


def quality_figures(sums: torch.Tensor) -> dict[str, float]:
    """`quality_sums` (all ranks) → eval/3d/silhouette_iou, keypoint_error (of the crop height) and
    keypoint_error_px (pixels of a KEYPOINT_CROP_HEIGHT crop)."""
    kp_error = float(sums[2] / sums[3].clamp_min(1))
    return {"eval/3d/silhouette_iou": float(sums[0] / sums[1].clamp_min(1)),
            "eval/3d/keypoint_error": kp_error,
            "eval/3d/keypoint_error_px": kp_error * KEYPOINT_CROP_HEIGHT}


def shape_recovery(model: ThreeDSL, query: Any, gallery: Any) -> dict[str, float]:
    """β recovery (`beta_recovery`) over every image of `query` and `gallery` (eval.extract.SplitFeatures) whose
    identity's true β the data set knows; {} where it knows none."""
    pred = torch.cat([query.feats["betas"], gallery.feats["betas"]]).numpy()
    true = np.concatenate([query.true_betas, gallery.true_betas])
    known = ~np.isnan(true).any(axis=1)
    if not known.any():
        return {}
    pids = np.concatenate([query.pids, gallery.pids])[known]
    assert model.body is not None
    nb = pred.shape[1]
    direction, _ = scale_direction(model.body.smpl.shapedirs[..., :nb].cpu(), model.body.template.cpu())
    res = beta_recovery(pred[known], true[known], pids, direction.numpy())
    return {"eval/3d/beta_r": float(res["mean_r"]), "eval/3d/beta_r_raw": float(res["mean_r_raw"]),
            "eval/3d/beta_identification": float(res["identification"]),
            "eval/3d/beta_identification_chance": float(res["chance"])}


def format_figures(metrics: dict[str, float]) -> str:
    """The reconstruction figures among `metrics` as printed lines ("" when there are none)."""
    m = metrics
    lines = []
    if "eval/3d/silhouette_iou" in m:
        lines.append(f"3D reconstruction: silhouette IoU {m['eval/3d/silhouette_iou']:.3f}, keypoint error "
                     f"{m['eval/3d/keypoint_error_px']:.2f} px of a {KEYPOINT_CROP_HEIGHT}-px crop "
                     f"({m['eval/3d/keypoint_error']:.4f} of its height)")
    if "eval/3d/beta_r" in m:
        lines.append(f"body shape: mean r over beta dimensions {m['eval/3d/beta_r']:.3f} (size direction projected "
                     f"out; raw {m['eval/3d/beta_r_raw']:.3f}), identified by shape "
                     f"{100 * m['eval/3d/beta_identification']:.1f}% (chance "
                     f"{100 * m['eval/3d/beta_identification_chance']:.1f}%)")
    return "\n".join(lines)
