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
    predict_3d,
    quality_figures,
    quality_sums,
    shape_recovery,
    silhouette_iou,
)
from reid3dsl.models.io import MODEL_FILE, save_model
from reid3dsl.models.threedsl import ThreeDSL
from reid3dsl.precision import Precision
from reid3dsl.train import tracking

log = logging.getLogger(__name__)
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
            metrics.update(shape_recovery(module, query, gallery))
        if self.run_id is not None:
            self._log_pictures(module, precision, query, gallery, epoch, final)
        return metrics

    def _shape_quality(self, module: ThreeDSL, precision: Precision) -> dict[str, float]:
        """Silhouette IoU and keypoint error against the data's masks and keypoints (the renderer's ground truth
        on the embedded set), over up to QUALITY_IMAGES query images per rank. Collective: every rank calls it."""
        import torch.distributed as dist

        sums = quality_sums(module, self.cfg, self.splits[0], self.rank, self.world_size, self.device, precision)
        if self.world_size > 1 and dist.is_initialized():
            dist.all_reduce(sums)
        return quality_figures(sums)

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
        sil, projected = predict_3d(module, precision, batch, tuple(mask.shape[1:]), self.device)
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
