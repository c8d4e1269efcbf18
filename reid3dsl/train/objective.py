"""The 3DSL objective: identity losses of both streams, the self-supervised projection losses (keypoints,
silhouette, displacement) through the body model and renderer, and the adversarial prior (LSGAN).

`Objective.generator_terms` returns the unweighted terms of the encoders' loss and `total` weights them from
`cfg.loss`; `Objective.discriminator_loss` is the discriminator's LSGAN loss. Projection runs in fp32 outside
autocast whatever the precision policy chose for the networks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reid3dsl import losses
from reid3dsl.config import Config


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Gradients flow through `module` to its inputs but not into its parameters."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


@dataclass
class Projection:
    """The body model and renderer that carry the 3D stream's output back to the image."""

    body: nn.Module  # reid3dsl.body.smpld.SMPLD
    renderer: Any  # reid3dsl.body.render.SilhouetteRenderer; None when the silhouette term is off
    focal: float  # normalised focal length (reid3dsl.body.camera.normalized_focal)
    shape_size: tuple[int, int]
    sil_size: tuple[int, int]


class Objective:
    """Loss terms of the encoders (generator) and of the discriminator, weighted by `cfg.loss`."""

    def __init__(self, cfg: Config, projection: Projection | None, clothes_aware: bool) -> None:
        self.cfg = cfg
        self.projection = projection
        self.clothes_aware = clothes_aware

    def _identity_terms(self, out: dict, batch: dict, stream: str) -> dict[str, torch.Tensor]:
        pids = batch["pid"]
        clothes = batch["clothes"] if self.clothes_aware else None
        return {
            f"ce_{stream}": F.cross_entropy(out["logits"].float(), pids, label_smoothing=self.cfg.loss.label_smoothing),
            f"triplet_{stream}": losses.triplet_loss(out["feat"].float(), pids, self.cfg.loss.triplet_margin, clothes),
        }

    def project(self, shape_out: dict) -> dict[str, torch.Tensor]:
        """Body mesh, camera and 2D keypoints of the 3D stream's output (fp32, outside autocast).

        → {"vertices" (B,V,3), "cam_t" (B,3), "keypoints_2d" (B,17,2) in shape-image pixels}."""
        from reid3dsl.body.camera import project_points, weak_perspective_to_translation

        assert self.projection is not None
        proj = self.projection
        with torch.autocast(shape_out["cam"].device.type, enabled=False):
            body = proj.body(shape_out["betas"].float(), shape_out["rotmats"].float(), shape_out["delta"].float())
            cam_t = weak_perspective_to_translation(shape_out["cam"].float(), proj.focal)
            kp2d = project_points(body.keypoints, cam_t, proj.shape_size, proj.focal)
        return {"vertices": body.vertices, "cam_t": cam_t, "keypoints_2d": kp2d}

    def generator_terms(self, out: dict, batch: dict, disc: nn.Module | None) -> dict[str, torch.Tensor]:
        """Unweighted loss terms for the streams in `out`; `disc` is the discriminator module (frozen here)."""
        terms: dict[str, torch.Tensor] = {}
        for stream in ("rgb", "shape"):
            if stream in out:
                terms.update(self._identity_terms(out[stream], batch, stream))
        if "shape" not in out:
            return terms
        shape_out = out["shape"]
        proj = self.projection
        assert proj is not None
        projected = self.project(shape_out)
        with torch.autocast(shape_out["cam"].device.type, enabled=False):
            terms["keypoint"] = losses.keypoint_loss(projected["keypoints_2d"], batch["keypoints"], proj.shape_size)
            terms["displacement"] = losses.displacement_loss(shape_out["delta"].float())
            if proj.renderer is not None and self.cfg.loss.silhouette:
                idx = self._silhouette_rows(batch)
                if idx.numel():
                    sil = proj.renderer.render(
                        projected["vertices"][idx], proj.body.faces, projected["cam_t"][idx], proj.sil_size
                    )
                    terms["silhouette"] = losses.silhouette_loss(sil, batch["mask"][idx].float())
        if disc is not None and self.cfg.loss.adversarial:
            with frozen(disc):
                scores = disc(shape_out["rotmats"], shape_out["betas"])
            terms["adversarial"] = losses.lsgan_generator_loss(scores.float())
        return terms

    def _silhouette_rows(self, batch: dict) -> torch.Tensor:
        """The rows of the batch that get a silhouette term: those with a mask, at most `silhouette_fraction`."""
        rows = torch.nonzero(batch["has_mask"], as_tuple=False).flatten()
        keep = max(1, round(self.cfg.loss.silhouette_fraction * batch["has_mask"].numel()))
        return rows[:keep]

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ weight · term."""
        w = self.cfg.loss
        weights = {
            "ce_rgb": w.ce_weight, "triplet_rgb": w.triplet_weight,
            "ce_shape": w.shape_ce_weight, "triplet_shape": w.shape_triplet_weight,
            "keypoint": w.keypoint_weight, "silhouette": w.silhouette_weight,
            "displacement": w.displacement_weight, "adversarial": w.adversarial_weight,
        }
        return sum(weights[name] * value for name, value in terms.items())  # type: ignore[return-value]

    def discriminator_loss(self, disc: nn.Module, real: tuple[torch.Tensor, torch.Tensor],
                           fake: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """LSGAN loss of D on prior samples `real` and the stream's (detached) `fake` (rotmats (B,24,3,3), betas)."""
        real_scores = disc(*real)
        fake_scores = disc(fake[0].detach(), fake[1].detach())
        return losses.lsgan_discriminator_loss(real_scores.float(), fake_scores.float())
