"""Evaluation inside the training job and the final export.

Every rank extracts its share of query and gallery features; rank 0 computes the protocol × feature table and
the 3D stream's reconstruction figures. At every evaluation rank 0 draws the 3D stream's reconstruction of a
few query images (image, true mask, rendered silhouette, mesh overlay, IoU on each), at the final one also the
ranked retrievals of a few queries, and logs them to MLflow; at the end it exports the network as `model.pt`
(the checkpoint `python -m reid3dsl.eval` reads).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from reid3dsl.body.render import SHARP_BLUR_PX
from reid3dsl.config import Config
from reid3dsl.eval.extract import (
    EVAL_SPLITS,
    SplitFeatures,
    extract_split,
    gather_to_rank0,
    protocol_table,
    ranked_picture,
)
from reid3dsl.eval.reconstruction import (
    KEYPOINT_CROP_HEIGHT,
    beta_recovery,
    keypoint_errors,
    scale_direction,
    silhouette_iou,
)
from reid3dsl.models.io import MODEL_FILE, save_model
from reid3dsl.models.threedsl import ThreeDSL
from reid3dsl.precision import Precision
from reid3dsl.train import tracking

log = logging.getLogger(__name__)
QUALITY_IMAGES = 64
PICTURE_IMAGES = 6


class Evaluator:
    """Evaluation, pictures and export for one worker (pictures and export on rank 0 only)."""

    def __init__(self, cfg: Config, index: Any, device: torch.device, rank: int, world_size: int,
                 run_id: str | None) -> None:
        self.cfg = cfg
        self.index = index
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.run_id = run_id
        self.splits = EVAL_SPLITS[cfg.eval.split]

    def evaluate(self, module: ThreeDSL, precision: Precision, epoch: int, final: bool) -> dict[str, float]:
        """Metrics after `epoch` on rank 0 (`{}` elsewhere); every rank must call it (features and counts are
        gathered)."""
        split_feats = {}
        for split in self.splits:
            local = extract_split(module, self.cfg, split, self.rank, self.world_size, self.device, precision)
            split_feats[split] = gather_to_rank0(local, self.rank, self.world_size)
        # Evaluation renders even when the silhouette loss is off (its ablation still reports IoU).
        quality = self._shape_quality(module, precision) if module.switches.has_3d else {}
        if self.rank != 0:
            return {}
        query, gallery = (split_feats[s] for s in self.splits)
        assert query is not None and gallery is not None
        metrics = {**protocol_table(self.cfg, query, gallery), **quality}
        if module.switches.has_3d:
            metrics.update(self._shape_recovery(module, query, gallery))
        if self.run_id is not None:
            self._log_pictures(module, precision, query, gallery, epoch, final)
        return metrics

    def _predict_3d(self, module: ThreeDSL, precision: Precision, batch: dict[str, Any],
                    size: tuple[int, int]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The 3D stream's silhouettes (B, *size) for `batch` and its `project()` output (keypoints in shape-image
        pixels)."""
        was_training = module.training
        module.eval()
        with torch.no_grad(), precision.autocast():
            out_shape = module(batch["image"].to(self.device), batch["shape_image"].to(self.device))["shape"]
        module.train(was_training)
        with torch.no_grad():
            projected = module.project(out_shape)
            sil = module.silhouettes(projected, size, SHARP_BLUR_PX)
        return sil, projected

    def _shape_quality(self, module: ThreeDSL, precision: Precision) -> dict[str, float]:
        """How well the 3D stream explains the images: silhouette IoU (rendered at the mask resolution, > 0.5)
        and keypoint error (mean distance over visible keypoints, in units of the image height) against the
        data's masks and keypoints — the renderer's ground truth on the embedded set — over up to
        QUALITY_IMAGES query images per rank. Collective: every rank calls it."""
        import torch.distributed as dist

        from reid3dsl.data.pipeline import eval_batches

        sums = torch.zeros(4, dtype=torch.float64)  # IoU sum, masks, keypoint error sum, visible keypoints
        sil_size = (self.cfg.data.sil_height, self.cfg.data.sil_width)
        seen = 0
        for batch in eval_batches(self.cfg, self.splits[0], self.rank, self.world_size, 32):
            if seen >= QUALITY_IMAGES:
                break
            seen += len(batch["key"])
            sil, projected = self._predict_3d(module, precision, batch, sil_size)
            kp = projected["keypoints_2d"]
            has = batch["has_mask"]
            sums[0] += silhouette_iou(sil[has].cpu(), batch["mask"][has]).sum().item()
            sums[1] += int(has.sum())
            err = keypoint_errors(kp.cpu(), batch["keypoints"], self.cfg.data.shape_height)
            sums[2] += err.sum().item()
            sums[3] += err.numel()
        if self.world_size > 1 and dist.is_initialized():
            dist.all_reduce(sums)
        kp_error = float(sums[2] / sums[3].clamp_min(1))
        return {"eval/3d/silhouette_iou": float(sums[0] / sums[1].clamp_min(1)),
                "eval/3d/keypoint_error": kp_error,
                "eval/3d/keypoint_error_px": kp_error * KEYPOINT_CROP_HEIGHT}

    def _shape_recovery(self, module: ThreeDSL, query: SplitFeatures, gallery: SplitFeatures) -> dict[str, float]:
        """β recovery over every evaluated image whose identity's true β the data set knows (`beta_recovery`; none
        where it knows none)."""
        import numpy as np

        pred = torch.cat([query.feats["betas"], gallery.feats["betas"]]).numpy()
        true = np.concatenate([query.true_betas, gallery.true_betas])
        known = ~np.isnan(true).any(axis=1)
        if not known.any():
            return {}
        pids = np.concatenate([query.pids, gallery.pids])[known]
        assert module.body is not None
        nb = pred.shape[1]
        direction, _ = scale_direction(module.body.smpl.shapedirs[..., :nb].cpu(), module.body.template.cpu())
        res = beta_recovery(pred[known], true[known], pids, direction.numpy())
        return {"eval/3d/beta_r": float(res["mean_r"]), "eval/3d/beta_r_raw": float(res["mean_r_raw"]),
                "eval/3d/beta_identification": float(res["identification"]),
                "eval/3d/beta_identification_chance": float(res["chance"])}

    def _log_pictures(self, module: ThreeDSL, precision: Precision, query: SplitFeatures,
                      gallery: SplitFeatures, epoch: int, final: bool) -> None:
        """The reconstruction picture at every evaluation (named by the epoch); the ranked retrievals at the final
        one."""
        with tempfile.TemporaryDirectory() as tmp:
            paths = [ranked_picture(self.cfg, query, gallery, Path(tmp) / "ranked_results.png")] if final else []
            if module.switches.has_3d:
                name = f"reconstruction_epoch{epoch:03d}.png"
                paths.append(self._reconstruction_png(module, precision, Path(tmp) / name))
            for path in paths:
                if path is not None:
                    tracking.log_artifact(self.cfg, self.run_id, path, "pictures")

    def _reconstruction_png(self, module: ThreeDSL, precision: Precision, out: Path) -> Path:
        """`reconstruction_grid` of the first query images of the evaluated split."""
        from reid3dsl.body.camera import project_points
        from reid3dsl.body.draw import reconstruction_grid
        from reid3dsl.data.pipeline import eval_batches
        from reid3dsl.data.transforms import denormalize

        assert module.body is not None
        batch = next(iter(eval_batches(self.cfg, self.splits[0], 0, 1, PICTURE_IMAGES)))
        mask = batch["mask"]
        sil, projected = self._predict_3d(module, precision, batch, tuple(mask.shape[1:]))
        size = (self.cfg.data.shape_height, self.cfg.data.shape_width)
        vertices_px = project_points(projected["vertices"], projected["cam_t"], size, module.focal)
        # The crop the 3D stream saw, or the RGB crop at its size when it saw the body proxy.
        background = batch["shape_image"] if self.cfg.data.shape_input == "image" else F.interpolate(
            batch["image"], size=size, mode="bilinear", antialias=True)
        return reconstruction_grid(denormalize(background), mask, sil.cpu(), vertices_px.cpu(), module.body.faces,
                                   projected["keypoints_2d"].cpu(), batch["keypoints"],
                                   silhouette_iou(sil.cpu(), mask), out)

    def finish(self, module: ThreeDSL, precision: Precision) -> None:
        """Rank 0: export the network and log it to MLflow."""
        del precision
        if self.run_id is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = save_model(module, self.cfg, self.index.num_classes, Path(tmp) / MODEL_FILE)
            tracking.log_artifact(self.cfg, self.run_id, path, "checkpoint")
